"""Evaluation: `python -m minicl.evaluate run=RUN_DIR` (or `task=NAME` for the baselines alone).

Every predictor, the trained model (labelled by its arch: transformer, lstm, ...) and each
baseline, is called the same way, `predict(xs, ys, queries)`, on the same seeded prompts of each
setting. Writes metrics.json (per setting, model and number of in-context examples k: mean, std
and 5-95% bootstrap band of the normalised error) and plots/<setting>.png, and prints a compact
table.
"""

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from minicl.baselines import DMMSE, NOISELESS_STD, Baseline, Ridge, build_baseline
from minicl.common import Summary, pointwise_metric, predict_in_batches, resolve_device, write_json
from minicl.config import CONF, plain, register_schemas, task_from_config
from minicl.model import Predictor
from minicl.plots import setting_figure
from minicl.rundir import command_line, model_from_state, output_dir, read_prompt_run, stamp
from minicl.selection import effective_lams, noise_levels, selection_verdict
from minicl.settings import Prompts, default_settings, parse, setting_prompts
from minicl.tasks import Linear, Mixture, NoisyLinear, PromptSampler, Task, make_generators

# ---------------------------------------------------------------- metrics, table, plots


def summarise(errors: torch.Tensor, n_resamples: int, gen: torch.Generator) -> dict[str, list[float]]:
    """Per-k mean, std and 5-95% bootstrap band of the mean over prompts, for errors (B, N)."""
    B = errors.shape[0]
    errors = errors.cpu().double()
    idx = torch.randint(0, B, (n_resamples, B), generator=gen)
    counts = torch.zeros(n_resamples, B, dtype=errors.dtype).scatter_add_(
        1, idx, torch.ones_like(idx, dtype=errors.dtype)
    )
    means = counts @ errors / B  # (R, N): the mean of each resample
    lo, hi = torch.quantile(means, torch.tensor([0.05, 0.95], dtype=means.dtype), dim=0)
    return Summary(errors.mean(0).tolist(), errors.std(0).tolist(), lo.tolist(), hi.tolist()).to_json()


def table_ks(n_dims: int, n_points: int) -> list[int]:
    return sorted({min(k, n_points - 1) for k in (max(1, n_dims // 2), n_dims, 2 * n_dims)})


def format_table(metrics: dict) -> str:
    """Error at k = d/2, d, 2d for each setting and model."""
    ks = table_ks(metrics["n_dims"], metrics["n_points"])
    width = max(len(m) for s in metrics["settings"].values() for m in s["models"]) + 2
    lines = []
    for name, s in metrics["settings"].items():
        lines.append(
            f"{name} ({s['metric']})".ljust(width) + "".join(f"k={k}".rjust(10) for k in ks if k < len(s["trivial"]))
        )
        for model, m in s["models"].items():
            lines.append(f"  {model}".ljust(width) + "".join(f"{m['mean'][k]:10.4f}" for k in ks if k < len(m["mean"])))
    return "\n".join(lines)


# ---------------------------------------------------------------- the suite


def load_baselines(baselines: dict) -> dict[str, Baseline]:
    """{display name: {name: registry name, **params}} -> {display name: callable}."""
    out = {}
    for label, spec in baselines.items():
        spec = dict(spec)
        if "name" not in spec:
            raise ValueError(f"baselines.{label} needs a 'name' (a registered baseline), got {spec}")
        out[label] = build_baseline(spec.pop("name"), **spec)
    return out


def default_baselines(task_cfg: DictConfig | dict) -> dict:
    """The baseline set conf/baseline/<task>.yaml lists, resolved against the task config (a
    mixture's completed by with_components)."""
    path = CONF / "baseline" / f"{task_cfg['name']}.yaml"
    cfg = OmegaConf.create({"task": plain(task_cfg), "baselines": OmegaConf.load(path)})
    return with_components(plain(cfg)["baselines"], task_cfg)


FIXED_LAMS = [round(0.01 * 10 ** (i / 4), 4) for i in range(13)]  # a mixture's fixed ridges: 0.01 .. 10


def with_components(baselines: dict, task_cfg: DictConfig | dict) -> dict:
    """A mixture's baselines: each component's set (a label two components give different specs
    gets _c<i>, so ridge_c<i> is ridge at component i's own noise, the oracle there) and, when every
    component is linear with or without label noise, ridge at each lam of FIXED_LAMS and the Bayes
    model average over their noise levels (bayes_noise_mixture); then `baselines` (its own YAML's).
    Any other task's `baselines` unchanged."""
    if task_cfg["name"] != "mixture":
        return baselines
    mixture = task_from_config(task_cfg)
    assert isinstance(mixture, Mixture)
    sets = [default_baselines({"name": part.name, **dataclasses.asdict(part)}) for part in mixture.parts]
    specs: dict[str, list] = {}
    for own in sets:
        for label, spec in own.items():
            specs.setdefault(label, []).append(spec)
    out = {
        label if all(s == specs[label][0] for s in specs[label]) else f"{label}_c{i}": spec
        for i, own in enumerate(sets)
        for label, spec in own.items()
    }
    stds = noise_levels(mixture)
    if stds is not None:
        out |= {f"ridge_{lam:g}": {"name": "ridge", "lam": lam} for lam in FIXED_LAMS}
        out["bayes_noise_mixture"] = {
            "name": "bayes_noise_mixture",
            "noise_stds": stds,
            "weights": mixture.probs.tolist(),
        }
    return out | baselines


def evaluate(
    task_cfg: dict,
    predictors: Mapping[str, Predictor],
    out_dir: str | Path,
    n_prompts: int = 1280,
    n_points: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    settings: list[str] | None = None,
    batch_size: int = 256,
    bootstrap: int = 1000,
    progress: bool = True,
    pool_seed: int | None = None,
    command: str | None = None,
    model: str | None = None,
) -> dict:
    """Evaluate every predictor on every setting; writes out_dir/metrics.json (with `command`, the
    command line that asked for it, when given, minicl's commit and the machine) and out_dir/plots/.
    A task with a finite pool (task.num_tasks) draws it from `pool_seed` (default: `seed`). A noise
    mixture's components get each predictor's effective lam, `model` (a label) its verdict (minicl.selection)."""
    task = task_from_config(task_cfg)
    n_points = n_points or task_cfg["curriculum"]["points"]["end"]
    settings = list(settings or default_settings(task, pooled=bool(task_cfg.get("num_tasks"))))
    for setting in settings:
        parse(setting)  # every name checked before any work
    (Path(out_dir) / "plots").mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"task": task.name, "n_dims": task.n_dims, "n_points": n_points}
    metrics |= {"n_prompts": n_prompts, "seed": seed} | stamp(command, "metrics") | {"settings": {}}
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(total=len(settings) * len(predictors), disable=not progress, desc="evaluate")
    pool_seed = seed if pool_seed is None else pool_seed
    pool = {"noise_std": task_cfg.get("noise_std", 1.0), "num_tasks": task_cfg.get("num_tasks"), "pool_seed": pool_seed}
    stds, lams = noise_levels(task), {}  # a noise mixture: each component's effective lams
    for setting in settings:
        p = setting_prompts(setting, task, n_prompts, n_points, seed, device, **pool)
        metrics["settings"][setting] = entry = setting_entry(p.task, p.targets)  # a component: its own normaliser
        kept = score(p, predictors, entry, (batch_size, bootstrap, gen), bar, setting)
        if stds and setting.startswith("component_") and p.queries is None:
            lams[setting] = effective_lams(p.xs.cpu(), p.ys.cpu(), selection_k(metrics), kept, seed)
            entry["effective_lam"] = lams_entry(lams[setting], selection_k(metrics))
        setting_figure(setting, entry, Path(out_dir) / "plots" / f"{setting}.png")
    bar.close()
    metrics |= selection(metrics, lams, stds or [], model if model in predictors else None)
    write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics


def score(p: Prompts, predictors: Mapping[str, Predictor], entry: dict, how: tuple, bar: tqdm, setting: str) -> dict:
    """Each predictor's errors on the prompts p into entry["models"]; returns their predictions.
    `how`: (batch size, bootstrap resamples, the bootstrap's generator)."""
    batch_size, bootstrap, gen = how
    kept = {}
    for label, predictor in predictors.items():
        bar.set_postfix_str(f"{setting}: {label}")
        kept[label] = predict_in_batches(predictor, p.xs, p.ys, p.queries, batch_size)
        entry["models"][label] = summarise(pointwise_metric(p.task, kept[label], p.targets), bootstrap, gen)
        bar.update(1)
    return kept


def lams_entry(lams: dict[str, dict], k: int) -> dict:
    """A component's effective lams for metrics.json (without the bootstrap's resamples)."""
    return {"k": k} | {label: {key: v for key, v in e.items() if key != "resamples"} for label, e in lams.items()}


def selection_k(metrics: dict) -> int:
    """Where a mixture's selection is read: k = 2d, as its tables."""
    return min(2 * metrics["n_dims"], metrics["n_points"] - 1)


def selection(metrics: dict, lams: dict[str, dict], stds: list[float], model: str | None) -> dict:
    """{"selection": minicl.selection's verdict for `model`}, its components ordered from the cleanest
    labels up; {} without a model, the Bayes average or the effective lams of every component."""
    if model is None or len(lams) != len(stds) or len(stds) < 2 or "bayes_noise_mixture" not in lams[next(iter(lams))]:
        return {}
    order = [f"component_{i}" for i in sorted(range(len(stds)), key=stds.__getitem__)]
    k = selection_k(metrics)
    labels = metrics["settings"][order[0]]["models"]
    errors = {m: [metrics["settings"][c]["models"][m]["mean"][k] for c in order] for m in labels}
    by_label = {m: [lams[c][m] for c in order] for m in (model, "bayes_noise_mixture")}
    return {"selection": {"k": k, "components": order, "model": model} | selection_verdict(errors, by_label, model)}


def setting_entry(task: Task, targets: torch.Tensor) -> dict:
    """A setting's metrics before any model: the metric, the normaliser and predicting 0's level
    (the same at every k: one number, repeated for the plot's dashed line; 0.5 for accuracy)."""
    n = targets.shape[1]
    if task.classification:
        return {"metric": "accuracy", "normaliser": task.normaliser, "trivial": [0.5] * n, "models": {}}
    trivial = pointwise_metric(task, torch.zeros_like(targets), targets, task.normaliser).mean().item()
    return {"metric": "squared_error", "normaliser": task.normaliser, "trivial": [trivial] * n, "models": {}}


def pool_baselines(task_cfg: dict, pool_seed: int) -> dict[str, Baseline]:
    """For a linear run trained on a finite pool of tasks: dmmse, Bayes-optimal for the pool, and
    ridge, Bayes-optimal for the Gaussian prior of fresh tasks, under the same label noise."""
    task = task_from_config(task_cfg)
    if not task_cfg.get("num_tasks") or not task.linear_pool:
        return {}
    assert isinstance(task, Linear)  # linear_pool: f(x) = x . w
    sampler = PromptSampler(task, 1, make_generators(0), num_tasks=task_cfg["num_tasks"], pool_seed=pool_seed)
    assert sampler.function_pool is not None  # num_tasks draws a pool
    noise_std = task.noise_std if isinstance(task, NoisyLinear) else NOISELESS_STD
    return {"dmmse": DMMSE(sampler.function_pool["w"], noise_std), "ridge": fresh_ridge(task)}


def fresh_ridge(task: Linear) -> Ridge:
    """Ridge at lam = noise_std^2 / w_scale^2: Bayes-optimal for fresh Gaussian tasks of a linear class."""
    noise_std = task.noise_std if isinstance(task, NoisyLinear) else NOISELESS_STD
    return Ridge(lam=noise_std**2 / task.w_scale**2)


def other_task(task: dict, own: dict) -> dict:
    """`task` to evaluate a run of task `own` on: its n_dims must be the run's; it takes the run's
    curriculum (the prompt length the model reads) and no pool."""
    if task.get("n_dims") != own["n_dims"]:
        raise ValueError(f"the run reads {own['n_dims']} dims; task.n_dims={task.get('n_dims')} does not match")
    return {**task, "curriculum": own["curriculum"], "num_tasks": None}


def evaluate_run(
    run_dir: str | Path,
    baselines: dict | None = None,
    device: str = "auto",
    baselines_task: str | None = None,
    out_dir: str | Path | None = None,
    task: dict | None = None,
    **kwargs,
) -> dict:
    """Evaluate a trained run (its model and its task's baselines) into run_dir/metrics.json and plots/
    (a shipped model, `pretrained:<name>`: into rundir.output_dir's), or into `out_dir`.
    `baselines` replace the task's set; given with `baselines_task`, only if that is the run's task.
    `task` (a task config of the run's n_dims): its prompts and baselines instead of the run's task's,
    at the run's prompt length."""
    state = read_prompt_run(run_dir)
    task_cfg = state["config"]["task"] if task is None else other_task(task, state["config"]["task"])
    model = model_from_state(state).to(resolve_device(device))
    predictors: dict[str, Predictor] = {model.config.arch: model}
    if baselines is None or baselines_task not in (None, task_cfg["name"]):
        baselines = default_baselines(task_cfg)  # a mixture's completed there
    else:
        baselines = with_components(baselines, task_cfg)
    predictors |= load_baselines(baselines)
    pool_seed = state["config"]["trainer"]["seed"]  # the pool a run trains on is drawn from its seed
    predictors |= pool_baselines(task_cfg, pool_seed)
    kwargs.setdefault("seed", pool_seed)
    metrics = evaluate(
        task_cfg,
        predictors,
        out_dir or output_dir(run_dir),
        device=resolve_device(device),
        pool_seed=pool_seed,
        model=model.config.arch,
        **kwargs,
    )
    print(format_table(metrics))
    return metrics


# ---------------------------------------------------------------- command line


register_schemas()


@hydra.main(version_base=None, config_path=str(CONF), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    options = dict(
        n_prompts=cfg.n_prompts,
        seed=cfg.seed,
        settings=cfg.settings,
        batch_size=cfg.batch_size,
        bootstrap=cfg.bootstrap,
        command=command_line("minicl.evaluate"),
    )
    baselines = plain(cfg.baselines)
    if cfg.run is not None and cfg.on_task:  # the run's model on cfg.task's prompts, with cfg.task's baselines
        out_dir = HydraConfig.get().runtime.output_dir
        evaluate_run(cfg.run, baselines, device=cfg.device, task=plain(cfg.task), out_dir=out_dir, **options)
        return
    if cfg.run is not None:  # the composed baselines are for cfg.task: used only if that is the run's task
        evaluate_run(cfg.run, baselines, device=cfg.device, baselines_task=cfg.task.name, **options)
        return
    metrics = evaluate(
        plain(cfg.task),
        load_baselines(with_components(baselines, plain(cfg.task))),
        HydraConfig.get().runtime.output_dir,
        device=resolve_device(cfg.device),
        **options,
    )
    print(format_table(metrics))


if __name__ == "__main__":
    main()
