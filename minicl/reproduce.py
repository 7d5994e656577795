"""Does it reproduce? `python -m minicl.reproduce [claims=[linear,...]] [scale=cpu|paper] [source=train|pretrained]
[seeds=3 | seeds=[0,1,2]] [jobs=2]`.

The paper's four headline claims, each a run per seed, a comparison and a verdict: trains each
claim's run on each seed that is missing (a finished run in its directory is reused, an
interrupted one resumed; `jobs` runs side by side, each on its share of the cores), evaluates it
on fresh prompts of the standard setting (its seed's) against the comparators the claim shows
(bootstrap bands), reads the transformer's error at the criteria's k from the run's snapshots (how
far training got, and when), and writes OUT/<scale>/claims.json, one figure per claim, a combined
one and training.png, and prints the table: each seed's verdict, and on how many seeds each claim
holds. `scale=cpu` runs `experiment=claim_<task>` (sized for 2 CPU cores); `scale=paper` the
task's defaults (standard model, 500k steps), meant for a GPU. `source=pretrained` trains nothing:
it judges the claim models shipped with minicl (minicl.pretrained), the CPU-size runs of seed 0,
in about 4 minutes on 2 cores (mostly the tree claim's baselines).

Each criterion is fixed here, in code, before any run: a comparison of mean normalised errors
at named k, chosen from the paper's Figure 2 (and its appendix figures for trees and ReLU nets).
"""

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from minicl.common import Summary, pointwise_metric, predict_in_batches, resolve_device, write_json
from minicl.config import (
    CONF,
    check_config,
    config_differences,
    plain,
    register_schemas,
    resolved_config,
    task_from_config,
)
from minicl.evaluate import default_baselines, evaluate_run
from minicl.plots import claims_figures, training_figure
from minicl.rundir import (
    PRETRAINED,
    command_line,
    latest_checkpoint,
    model_from_state,
    read_checkpoint,
    read_provenance,
    read_run,
    shipped_info,
    stamp,
    training_seconds,
)
from minicl.settings import setting_prompts

Errors = Callable[[str, int], float]  # (model, k) -> mean normalised error


class Condition(NamedTuple):
    """One criterion of a claim, as claims.json keeps it ({"k", "condition", "holds", "bound"})."""

    k: int
    text: str  # what it asks
    holds: bool
    bound: float | None  # the transformer's error it must not pass; None: a condition on a comparator

    def to_json(self) -> dict:
        return {"k": self.k, "condition": self.text, "holds": bool(self.holds), "bound": self.bound}


@dataclass(frozen=True)
class Claim:
    statement: str
    # the comparators evaluated, drawn and tabulated beside the transformer: all its conditions read
    shown: tuple[str, ...]
    conditions: Callable[[Errors, dict, int, int], list[Condition]]  # (err, setting, d, n) -> its conditions
    # reported, not judged: the transformer's error over this comparator's at the largest k read
    ratio_to: str | None = None


def best_lasso(err: Errors, s: dict, k: int) -> float:
    return min(err(m, k) for m in s["models"] if m.startswith("lasso"))


def below(err: Errors, k: int, text: str, bound: float, strictly: bool = False) -> Condition:
    e = err("transformer", k)
    return Condition(k, text, e < bound if strictly else e <= bound, bound)


def linear_conditions(err: Errors, s: dict, d: int, n: int) -> list[Condition]:
    half, twice = max(1, d // 2), min(2 * d, n - 1)
    ls_half = err("least_squares", half)
    return [
        Condition(
            half,
            "within 0.05 of least squares (k = d/2)",
            abs(err("transformer", half) - ls_half) <= 0.05,
            ls_half + 0.05,
        ),
        below(err, twice, "at most least squares + 0.05 (k = 2d)", err("least_squares", twice) + 0.05),
    ]


def sparse_conditions(err: Errors, s: dict, d: int, n: int) -> list[Condition]:
    half = max(1, d // 2)
    return [
        below(err, half, "at most half of least squares (k = d/2)", 0.5 * err("least_squares", half)),
        below(err, half, "at most the best Lasso + 0.1 (k = d/2)", best_lasso(err, s, half) + 0.1),
    ]


def relu_conditions(err: Errors, s: dict, d: int, n: int) -> list[Condition]:
    last = n - 1
    return [
        below(err, last, "at most the GD-trained net + 0.1 (largest k)", err("gd_2nn", last) + 0.1),
        below(err, last, "at most half of least squares (largest k)", 0.5 * err("least_squares", last)),
    ]


def tree_conditions(err: Errors, s: dict, d: int, n: int) -> list[Condition]:
    last = n - 1
    return [
        Condition(
            last, "XGBoost itself better than predicting 0 (largest k)", err("xgboost", last) < s["trivial"][last], None
        ),
        *(
            below(err, last, f"below {m} (largest k)", err(m, last), strictly=True)
            for m in ("xgboost", "decision_tree_4", "decision_tree")
        ),
    ]


CLAIMS = {
    "linear": Claim(
        "learns linear functions as well as least squares", ("least_squares", "knn_3", "averaging"), linear_conditions
    ),
    "sparse_linear": Claim(
        "learns sparse linear functions about as well as Lasso, far better than least squares below d examples",
        ("least_squares", "lasso_1", "lasso_1e-1", "lasso_1e-2", "lasso_1e-3", "lasso_1e-4", "bayes_sparse"),
        sparse_conditions,
    ),
    "relu_2nn": Claim(
        "learns 2-layer ReLU nets about as well as a net fitted by GD, far better than least squares",
        ("least_squares", "gd_2nn", "knn_3"),
        relu_conditions,
        ratio_to="gd_2nn",
    ),
    "decision_tree": Claim(
        "learns decision trees better than greedy tree learning and XGBoost",
        ("xgboost", "decision_tree_4", "decision_tree"),
        tree_conditions,
    ),
}
SCALES = ("cpu", "paper")
SOURCES = ("train", "pretrained")


def verdict(name: str, metrics: dict) -> dict:
    """The claim's conditions on the standard setting of `metrics` (evaluate's output), with the
    transformer's and the shown comparators' errors and bands at the k the conditions name."""
    claim, s = CLAIMS[name], metrics["settings"]["standard"]
    d, n = metrics["n_dims"], metrics["n_points"]
    models = {m: Summary.read(entry) for m, entry in s["models"].items()}
    conditions = claim.conditions(lambda model, k: models[model].mean[k], s, d, n)
    ks = sorted({c.k for c in conditions})
    errors = {m: {str(k): list(models[m].at(k)) for k in ks} for m in shown(name, s)}  # str(k): as in claims.json
    return {
        "claim": name,
        "statement": claim.statement,
        "n_dims": d,
        "n_points": n,
        "ks": ks,
        "errors": errors,
        "trivial": {str(k): s["trivial"][k] for k in ks},
        "conditions": [c.to_json() for c in conditions],
        "holds": all(c.holds for c in conditions),
        **(
            {
                "ratio": {
                    "to": claim.ratio_to,
                    "k": ks[-1],
                    "value": models["transformer"].mean[ks[-1]] / models[claim.ratio_to].mean[ks[-1]],
                }
            }
            if claim.ratio_to in s["models"]
            else {}
        ),
    }


def shown(name: str, s: dict) -> list[str]:
    """The transformer and the claim's comparators that the setting `s` holds."""
    return ["transformer", *(m for m in CLAIMS[name].shown if m in s["models"])]


# ---------------------------------------------------------------- runs


def claim_overrides(name: str, scale: str, overrides: list[str]) -> list[str]:
    """The training overrides of one claim run: experiment=claim_<task> at cpu scale, the task's
    defaults at paper scale, then `overrides`."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if name not in CLAIMS:
        raise ValueError(f"unknown claim {name!r}; known: {sorted(CLAIMS)}")
    return [f"task={name}", *([f"experiment=claim_{name}"] if scale == "cpu" else []), *overrides]


def claim_config(name: str, scale: str, overrides: list[str]) -> DictConfig:
    """The composed and checked training config of one claim run (claim_overrides)."""
    chosen = claim_overrides(name, scale, overrides)
    if GlobalHydra.instance().is_initialized():  # inside the command's own Hydra app
        cfg = compose(config_name="train", overrides=chosen)
    else:
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            cfg = compose(config_name="train", overrides=chosen)
    if cfg.model.arch != "transformer":
        raise ValueError(
            f"the claims are the transformer's, got model.arch={cfg.model.arch!r}: train other "
            "architectures with minicl.train and set them side by side with minicl.compare"
        )
    check_config(cfg)
    return cfg


def train_command(overrides: list[str], run_dir: Path, threads: int | None = None) -> None:
    """`python -m minicl.train OVERRIDES` into run_dir (which resumes an interrupted run, and refuses
    one of another config), in a process of its own; with `threads`, on that many threads, its
    output into run_dir/console.log."""
    cmd = [sys.executable, "-m", "minicl.train", *overrides, f"hydra.run.dir='{run_dir}'"]
    if threads is None:
        if subprocess.run(cmd).returncode:
            raise RuntimeError(f"training stopped with an error (above): {shlex.join(cmd)}")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"training {run_dir} on {threads} thread{'s' * (threads > 1)} (output: {run_dir / 'console.log'})", flush=True
    )
    with open(run_dir / "console.log", "a") as log:
        code = subprocess.run(
            [*cmd, "trainer.progress=false"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ | {"OMP_NUM_THREADS": str(threads)},
        ).returncode
    if code:
        raise RuntimeError(f"training stopped with an error ({run_dir / 'console.log'}): {shlex.join(cmd)}")
    print(f"trained {run_dir}", flush=True)


def cost(cfg: DictConfig) -> int:
    """A run's training cost, roughly: steps times the prompt's final points."""
    return cfg.trainer.steps * cfg.task.curriculum.points.end


def train_all(runs: list[tuple[list[str], Path]], jobs: int) -> None:
    """Train each (overrides, run_dir): one at a time, or `jobs` side by side, each on its share of
    the cores; a failed run stops none of the others."""
    if jobs == 1:
        for overrides, run_dir in runs:
            train_command(overrides, run_dir)
        return
    threads = max(1, len(os.sched_getaffinity(0)) // jobs) if hasattr(os, "sched_getaffinity") else 1
    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(train_command, overrides, run_dir, threads) for overrides, run_dir in runs]
    failed = [f.exception() for f in futures if f.exception()]
    if failed:
        raise RuntimeError("; ".join(map(str, failed)))


def needs_training(cfg: DictConfig, run_dir: Path) -> bool:
    """Whether run_dir lacks a finished run of `cfg`; a finished run of another config is an error."""
    state = latest_checkpoint(run_dir) if run_dir.exists() else None
    if state is None or state["step"] < cfg.trainer.steps:
        return True
    diffs = config_differences(state["config"], plain(resolved_config(cfg, resolve_device(cfg.trainer.device))))
    if state["step"] != cfg.trainer.steps:
        diffs.append(f"trainer.steps: {state['step']} -> {cfg.trainer.steps}")
    if diffs:
        raise ValueError(
            f"{run_dir} holds a finished run of another config ({'; '.join(diffs)}); move it away or pass another out="
        )
    return False


def claim_baselines(name: str, run_dir: str | Path) -> dict:
    """The baselines of the run's task set that the claim shows (the others, gd_2nn beside the trees
    above all, would only cost time)."""
    return {
        m: spec for m, spec in default_baselines(read_run(run_dir)["config"]["task"]).items() if m in CLAIMS[name].shown
    }


def evaluated(run_dir: Path, n_prompts: int, device: str, baselines: dict | None = None) -> dict:
    """The run's metrics on the standard setting: its metrics.json if newer than its checkpoint, of
    `n_prompts` prompts and with every baseline of `baselines` (default: its task's set), else a
    fresh evaluation of those."""
    metrics_path = run_dir / "metrics.json"
    baselines = baselines or default_baselines(read_run(run_dir)["config"]["task"])
    if metrics_path.exists() and metrics_path.stat().st_mtime > (run_dir / "state.pt").stat().st_mtime:
        metrics = json.loads(metrics_path.read_text())
        standard = metrics["settings"].get("standard")
        if metrics["n_prompts"] == n_prompts and standard and set(baselines) <= set(standard["models"]):
            return metrics
    return evaluate_run(run_dir, baselines, device=device, settings=["standard"], n_prompts=n_prompts)


def training_curve(run_dir: Path, ks: Sequence[int], metrics: dict, device: str) -> dict:
    """How far training got, and when: the transformer's mean error at `ks` for each snapshot
    model_<step>.pt of the run, on the same prompts as its final evaluation (`metrics`)."""
    snapshots = sorted(run_dir.glob("model_*.pt"), key=lambda path: int(path.stem.removeprefix("model_")))
    curve: dict[str, Any] = {"steps": [], "errors": {str(k): [] for k in ks}}
    if not snapshots:
        return curve
    task_cfg = read_checkpoint(snapshots[0])["config"]["task"]
    task, where = task_from_config(task_cfg), resolve_device(device)
    n_prompts, n_points, seed = metrics["n_prompts"], metrics["n_points"], metrics["seed"]
    p = setting_prompts("standard", task, n_prompts, n_points, seed, where, task_cfg.get("noise_std", 1.0))
    for path in snapshots:
        state = read_checkpoint(path)
        with torch.no_grad():
            preds = predict_in_batches(model_from_state(state).to(where), p.xs, p.ys, p.queries)
        errors = pointwise_metric(p.task, preds, p.targets, task.normaliser).mean(0)
        curve["steps"].append(state["step"])
        for k in ks:
            curve["errors"][str(k)].append(errors[k].item())
    return curve


def seed_list(seeds) -> list[int]:
    """seeds=N -> [0, ..., N-1]; a list of distinct non-negative seeds as given."""
    chosen = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not chosen or min(chosen) < 0 or len(set(chosen)) < len(chosen):
        raise ValueError(f"seeds must be a count N >= 1 or a list of distinct seeds >= 0, got {seeds!r}")
    return chosen


def checked_request(scale: str, overrides: Sequence[str], source: str, seeds, jobs: int) -> list[int]:
    """The seeds, once the command's options are checked together (each claim's config is checked
    by claim_config)."""
    seeds = seed_list(seeds)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "pretrained" and (scale != "cpu" or seeds != [0]):
        raise ValueError(
            f"source=pretrained judges the CPU-size claim models shipped with minicl, trained on seed 0; "
            f"scale={scale} seeds={seeds} has none"
        )
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if any(o.lstrip("+~").startswith("trainer.seed=") for o in overrides):
        raise ValueError("pass the training seeds as seeds=[...], not as the override trainer.seed")
    return seeds


def reproduce(
    claims: list[str],
    scale: str = "cpu",
    out: str | Path = "runs/claims",
    n_prompts: int = 1280,
    device: str = "auto",
    overrides: Sequence[str] = (),
    source: str = "train",
    seeds=(0,),
    jobs: int = 1,
    command: str | None = None,
) -> list[dict]:
    """Run, evaluate and judge each claim on each seed (runs in OUT/<scale>/<claim>/seed<N>, trained
    `jobs` at a time); writes OUT/<scale>/claims.json ({"claims": the results, with `command`,
    minicl's commit and the machine}) and figures, prints the table.
    source="pretrained" judges the shipped claim models (seed 0) instead, with no training (OUT/pretrained/)."""
    seeds = checked_request(scale, overrides, source, seeds, jobs)
    out = Path(out) / (scale if source == "train" else "pretrained")
    runs = {(n, s): [*claim_overrides(n, scale, list(overrides)), f"trainer.seed={s}"] for n in claims for s in seeds}
    configs = {key: claim_config(key[0], scale, chosen) for key, chosen in runs.items()}  # every config checked first
    if source == "train":
        pending = [key for key, cfg in configs.items() if needs_training(cfg, out / key[0] / f"seed{key[1]}")]
        pending.sort(key=lambda key: -cost(configs[key]))  # the longest first: side by side, they end together
        train_all([(runs[key], out / key[0] / f"seed{key[1]}") for key in pending], jobs)
    results: list[dict] = []
    panels: dict[str, list[dict]] = {}
    for name in claims:
        print(f"claim {name}: {CLAIMS[name].statement} ({out / name})")
        per_seed, panels[name] = [], []
        for seed in seeds:
            started = time.perf_counter()
            metrics, result = (
                seed_verdict(name, out / name / f"seed{seed}", n_prompts, device)
                if source == "train"
                else shipped_verdict(name, out / name, n_prompts, device)
            )
            per_seed.append({"seed": seed, **result, "total_seconds": time.perf_counter() - started})
            panels[name].append(metrics["settings"]["standard"])
        results.append(claim_result(name, per_seed))
        # after each claim: nothing lost
        write_json(out / "claims.json", stamp(command, "claims") | {"claims": results})
    claims_figures(panels, results, out)
    training_figure(results, out)
    print(format_verdicts(results))
    return results


def claim_result(name: str, per_seed: list[dict]) -> dict:
    """One claim over its seeds: how many it holds on, and each seed's verdict."""
    first, held = per_seed[0], sum(r["holds"] for r in per_seed)
    return {
        "claim": name,
        "statement": CLAIMS[name].statement,
        "n_dims": first["n_dims"],
        "n_points": first["n_points"],
        "ks": first["ks"],
        "seeds": [r["seed"] for r in per_seed],
        "holds_on": held,
        "holds": held == len(per_seed),
        "runs": per_seed,
    }


def seed_verdict(name: str, run_dir: Path, n_prompts: int, device: str) -> tuple[dict, dict]:
    """A trained claim run evaluated (its own seed's prompts) and judged, with its training time and curve."""
    metrics = evaluated(run_dir, n_prompts, device, claim_baselines(name, run_dir))
    result = verdict(name, metrics)
    provenance = read_provenance(run_dir)
    return metrics, result | {
        "run": str(run_dir),
        "train_seconds": training_seconds(run_dir),
        "machine": provenance.where() if provenance else "",  # '' when not recorded
        "curve": training_curve(run_dir, result["ks"], metrics, device),
    }


def shipped_verdict(name: str, out: Path, n_prompts: int, device: str) -> tuple[dict, dict]:
    """The shipped claim model (pretrained:<name>) evaluated into `out`, judged, with its recorded
    training time and curve."""
    shipped = shipped_info(name)
    metrics = evaluate_run(
        PRETRAINED + name,
        claim_baselines(name, PRETRAINED + name),
        device=device,
        settings=["standard"],
        n_prompts=n_prompts,
        out_dir=out,
    )
    result = verdict(name, metrics)
    curve = {
        "steps": shipped["curve"]["steps"],
        "errors": {str(k): shipped["curve"]["errors"][str(k)] for k in result["ks"]},
    }
    return metrics, result | {"run": PRETRAINED + name, "train_seconds": shipped["train_seconds"], "curve": curve}


# ---------------------------------------------------------------- table and figures


def format_verdicts(results: list[dict]) -> str:
    lines = []
    for c in results:
        minutes = " / ".join(f"{r['train_seconds'] / 60:.1f}" for r in c["runs"])
        lines.append(
            f"{c['claim']} (d={c['n_dims']}): {c['statement']}: holds on {c['holds_on']} of {len(c['runs'])} "
            f"seed{'s' * (len(c['runs']) > 1)}  [trained {minutes} min]"
        )
        for r in c["runs"]:
            ratio = (
                f"; transformer / {r['ratio']['to']} at k={r['ratio']['k']}: {r['ratio']['value']:.2f}"
                if "ratio" in r
                else ""
            )
            lines.append(f" seed {r['seed']}: {'HOLDS' if r['holds'] else 'DOES NOT HOLD'}{ratio}")
            for k in map(str, r["ks"]):
                errs = ", ".join(f"{m} {e[k][0]:.4f} [{e[k][1]:.4f}, {e[k][2]:.4f}]" for m, e in r["errors"].items())
                lines.append(f"  k={k}: {errs}; predict 0 {r['trivial'][k]:.4f}")
            lines += [f"  {'yes' if v['holds'] else 'NO '}  k={v['k']}: {v['condition']}" for v in r["conditions"]]
            for k, errs in r["curve"]["errors"].items():
                lines.append(
                    f"  transformer at k={k} during training: "
                    + ", ".join(f"{step} {e:.3f}" for step, e in zip(r["curve"]["steps"], errs))
                )
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


register_schemas()


@hydra.main(version_base=None, config_path=str(CONF), config_name="reproduce")
def main(cfg: DictConfig) -> None:
    seeds = cfg.seeds if isinstance(cfg.seeds, int) else list(cfg.seeds)
    reproduce(
        list(cfg.claims),
        cfg.scale,
        cfg.out,
        cfg.n_prompts,
        cfg.device,
        list(cfg.overrides),
        cfg.source,
        seeds,
        cfg.jobs,
        command_line("minicl.reproduce"),
    )


if __name__ == "__main__":
    main()
