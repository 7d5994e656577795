"""Limits explorer: `python -m minicl.explore run=RUN_DIR sweep=<name>`.

A sweep moves one property of the prompts (input scale, weight scale, label noise, covariance
condition number, prompt length, active dims) over a range and evaluates the trained model and
its task's baselines at each value with the evaluation suite's machinery (batched, seeded).
Errors are normalised by the clean signal's mean square at that value, so 1 is the error of
predicting 0 everywhere. Writes RUN_DIR/explore/<sweep>.json, <sweep>.png (error at k against
the swept value) and <sweep>_curves.png (error against k, one panel per value).
`sweep=probe` instead compares the model's implicit weights with least squares and ridge, and
`sweep=algorithms` each layer with GD, Newton and ridge (minicl.algorithms).
"""

from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from minicl.algorithm_probe import probe_algorithms, summary
from minicl.common import predict_in_batches, resolve_device, write_json
from minicl.config import CONF, plain, register_schemas, task_from_config
from minicl.evaluate import default_baselines, load_baselines, summarise
from minicl.plots import sweep_figures
from minicl.probe import probe_run
from minicl.rundir import command_line, model_from_state, output_dir, read_prompt_run, stamp
from minicl.settings import FAMILIES, SETTINGS, Draw, Prompts
from minicl.tasks import Task, make_generators

SWEEPS = {  # name: (the settings family it draws, default values, axis label, log axis)
    "x_scale": ("scale_x", [0.1, 0.18, 0.32, 0.56, 1.0, 1.8, 3.2, 5.6, 10.0], "scale of x", True),
    "w_scale": ("scale_y", [0.1, 0.18, 0.32, 0.56, 1.0, 1.8, 3.2, 5.6, 10.0], "scale of w", True),
    "noise": ("noise", [0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0], "label noise std", False),
    "skew": ("skew", [1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0], "condition number of the input covariance", True),
    "length": ("standard", None, "in-context examples (prompt length - 1)", False),
    "dims": ("dims", None, "active dims", False),
}


def sweep_values(sweep: str, values, n_dims: int, max_points: int) -> list[float]:
    if values is not None:
        return [float(v) for v in values]
    if sweep == "dims":
        return [float(v) for v in range(1, n_dims + 1)]
    if sweep == "length":
        return [float(k) for k in np.unique(np.linspace(1, max_points - 1, 12).round().astype(int))]
    return list(SWEEPS[sweep][1] or [])


def sweep_prompts(
    sweep: str, value: float, task: Task, n_prompts: int, n_points: int, seed: int, device="cpu"
) -> Prompts:
    """The prompts of one value of a sweep: its settings family at that value (the length sweep:
    the standard setting; it reads the one long prompt at every k)."""
    name = SWEEPS[sweep][0]
    d = Draw(task, n_prompts, n_points, make_generators(seed, device, "eval"))
    return SETTINGS[name](d) if name in SETTINGS else FAMILIES[name](d, value)


def sweep_points(sweep: str, model, train_points: int, max_points: int | None) -> int:
    """Prompt length: the training length, or for the length sweep as long as asked or the positions allow."""
    if sweep != "length":
        return train_points
    limit = model.config.max_points  # learned positions; None: any length
    n_points = max_points or limit or 2 * train_points
    if limit is not None and n_points > limit:
        raise ValueError(
            f"max_points={n_points} is past the learned positions (n_positions={limit}); "
            "train with model.pos_emb=rope or none, or a recurrent model.arch, to go further"
        )
    return n_points


def sweep_entry(predictors: dict, p: Prompts, value: float, gen: torch.Generator) -> dict:
    """Every predictor's error at one swept value, over the clean signal's mean square."""
    normaliser = p.clean.double().pow(2).mean().item()
    models = {
        name: summarise(
            ((predict_in_batches(predictor, p.xs, p.ys).double() - p.targets.double()) ** 2 / normaliser).cpu(),
            200,
            gen,
        )
        for name, predictor in predictors.items()
    }
    return {"value": value, "normaliser": normaliser, "models": models}


def sweep_results(
    predictors: dict, sweep: str, value: float, task: Task, n_prompts: int, n_points: int, seed: int, device, gen
) -> dict:
    """sweep_entry at one value, and for a mixture each component's alone ("components")."""
    entry = sweep_entry(predictors, sweep_prompts(sweep, value, task, n_prompts, n_points, seed, device), value, gen)
    parts = getattr(task, "parts", [])
    if parts:
        entry["components"] = [
            sweep_entry(predictors, sweep_prompts(sweep, value, part, n_prompts, n_points, seed, device), value, gen)
            for part in parts
        ]
    return entry


def run_sweep(
    run_dir: str | Path,
    sweep: str,
    k: int | None = None,
    values=None,
    n_prompts: int = 1280,
    seed: int = 0,
    device="cpu",
    baselines: dict | None = None,
    max_points: int | None = None,
    out_dir: str | Path | None = None,
    command: str | None = None,
) -> dict:
    """Evaluate the run's model and baselines at every value of `sweep`; writes JSON (with `command`,
    the command line that asked for it, minicl's commit and the machine) and plots."""
    if sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {sweep!r}; known: {sorted(SWEEPS)}, 'probe' and 'algorithms'")
    state = read_prompt_run(run_dir)
    task_cfg = state["config"]["task"]
    task = task_from_config(task_cfg)
    if task.classification:
        raise ValueError("sweeps measure squared error; linear_classification runs are not supported")
    model = model_from_state(state).to(device)
    train_points = task_cfg["curriculum"]["points"]["end"]
    n_points = sweep_points(sweep, model, train_points, max_points)
    predictors = {model.config.arch: model} | load_baselines(
        default_baselines(task_cfg) if baselines is None else baselines
    )
    values = sweep_values(sweep, values, task.n_dims, n_points)
    gen = torch.Generator().manual_seed(seed)
    results = [
        sweep_results(predictors, sweep, value, task, n_prompts, n_points, seed, device, gen) for value in values
    ]
    k = min(2 * task.n_dims if k is None else k, n_points - 1)
    pos_emb = model.config.pos_emb if model.positions else None
    out = {"sweep": sweep, "run": str(run_dir), "k": k, "task": task.name, "n_points": n_points}
    out |= {"train_points": train_points, "arch": model.config.arch, "pos_emb": pos_emb, "n_prompts": n_prompts}
    out |= stamp(command, "sweep") | {"results": results}
    out_dir = Path(out_dir or output_dir(run_dir) / "explore")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / f"{sweep}.json", out)
    sweep_figures(out, SWEEPS[sweep][2], SWEEPS[sweep][3], out_dir)
    return out


# ---------------------------------------------------------------- command line


register_schemas()
OmegaConf.register_new_resolver("output_dir", lambda run: str(output_dir(run)), replace=True)  # conf/explore.yaml


@hydra.main(version_base=None, config_path=str(CONF), config_name="explore")
def main(cfg: DictConfig) -> None:
    device = resolve_device(cfg.device)
    if cfg.sweep == "algorithms":
        settings = tuple(cfg.settings) if cfg.settings else ("standard", "skewed")
        print(summary(probe_algorithms(cfg.run, cfg.k, cfg.n_prompts, cfg.seed, settings)))
        return
    if cfg.sweep == "probe":
        report = probe_run(cfg.run, n_prompts=cfg.n_prompts, seed=cfg.seed, device=device)
        k = report["k"]
        print(f"implicit weights vs least squares, cosine at k={k}: {report['least_squares']['cosine'][k]:.4f}")
        return
    baselines = None if cfg.baselines is None else plain(cfg.baselines)
    out = run_sweep(
        cfg.run,
        cfg.sweep,
        cfg.k,
        cfg.grid,
        cfg.n_prompts,
        cfg.seed,
        device,
        baselines,
        cfg.max_points,
        command=command_line("minicl.explore"),
    )
    models = list(out["results"][0]["models"])
    at = "k = the swept value" if cfg.sweep == "length" else f"k={out['k']}"
    print(f"{cfg.sweep:>10} " + "".join(f"{m:>16}" for m in models) + f"   (error / signal at {at})")
    for r in out["results"]:
        k = int(r["value"]) if cfg.sweep == "length" else out["k"]
        print(f"{r['value']:>10g} " + "".join(f"{r['models'][m]['mean'][k]:>16.4f}" for m in models))


if __name__ == "__main__":
    main()
