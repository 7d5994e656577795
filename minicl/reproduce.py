"""Does it reproduce? `python -m minicl.reproduce [claims=[linear,...]] [scale=cpu|paper] [source=train|pretrained]`.

The paper's four headline claims, each a run, a comparison and a verdict:
trains each claim's run that is missing (a finished run in its directory is reused, an
interrupted one resumed), evaluates it on fresh prompts of the standard setting with its task's
baselines (bootstrap bands), reads the transformer's error at the criteria's k from the run's
snapshots (how far training got, and when), and writes OUT/<scale>/claims.json, one figure per
claim, a combined one and training.png, and prints the verdict table. `scale=cpu` runs
`experiment=claim_<task>` (sized for 2 CPU cores); `scale=paper` the task's defaults (standard
model, 500k steps), meant for a GPU. `source=pretrained` trains nothing: it judges the claim
models shipped with minicl (minicl.pretrained), the CPU-size runs, in about 5 minutes on 2 cores
(mostly the tree claim's baselines).

Each criterion is fixed here, in code, before any run: a comparison of mean normalised errors
at named k, chosen from the paper's Figure 2 (and its appendix figures for trees and ReLU nets).
"""

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from minicl.checkpoint import PRETRAINED, latest_checkpoint, model_from_state, read_checkpoint, shipped_info
from minicl.common import pointwise_metric, predict_in_batches, pyplot, resolve_device, save_figure, write_json
from minicl.config import CONF, check_config, plain, register_schemas, task_from_config
from minicl.evaluate import draw_setting, evaluate_run
from minicl.rundir import config_differences, resolved_config, training_seconds
from minicl.settings import setting_prompts

Errors = Callable[[str, int], float]  # (model, k) -> mean normalised error


@dataclass(frozen=True)
class Claim:
    statement: str
    shown: tuple[str, ...]  # the comparators drawn and tabulated beside the transformer
    conditions: Callable[[Errors, dict, int, int], list[tuple[int, str, bool]]]  # (err, setting, d, n) -> [(k, condition, holds)]


def best_lasso(err: Errors, s: dict, k: int) -> float:
    return min(err(m, k) for m in s["models"] if m.startswith("lasso"))


def linear_conditions(err: Errors, s: dict, d: int, n: int) -> list[tuple[int, str, bool]]:
    half, twice = max(1, d // 2), min(2 * d, n - 1)
    return [
        (half, "within 0.05 of least squares (k = d/2)", abs(err("transformer", half) - err("least_squares", half)) <= 0.05),
        (twice, "at most least squares + 0.05 (k = 2d)", err("transformer", twice) <= err("least_squares", twice) + 0.05),
    ]


def sparse_conditions(err: Errors, s: dict, d: int, n: int) -> list[tuple[int, str, bool]]:
    half = max(1, d // 2)
    return [
        (half, "at most half of least squares (k = d/2)", err("transformer", half) <= 0.5 * err("least_squares", half)),
        (half, "at most the best Lasso + 0.1 (k = d/2)", err("transformer", half) <= best_lasso(err, s, half) + 0.1),
    ]


def relu_conditions(err: Errors, s: dict, d: int, n: int) -> list[tuple[int, str, bool]]:
    last = n - 1
    return [
        (last, "at most the GD-trained net + 0.1 (largest k)", err("transformer", last) <= err("gd_2nn", last) + 0.1),
        (last, "at most half of least squares (largest k)", err("transformer", last) <= 0.5 * err("least_squares", last)),
    ]


def tree_conditions(err: Errors, s: dict, d: int, n: int) -> list[tuple[int, str, bool]]:
    last = n - 1
    return [
        (last, "XGBoost itself better than predicting 0 (largest k)", err("xgboost", last) < s["trivial"][last]),
        *((last, f"below {m} (largest k)", err("transformer", last) < err(m, last)) for m in ("xgboost", "decision_tree_4", "decision_tree")),
    ]


CLAIMS = {
    "linear": Claim("learns linear functions as well as least squares", ("least_squares", "knn_3", "averaging"), linear_conditions),
    "sparse_linear": Claim(
        "learns sparse linear functions about as well as Lasso, far better than least squares below d examples",
        ("least_squares", "lasso_1e-1", "lasso_1e-2", "lasso_1e-3"), sparse_conditions,
    ),
    "relu_2nn": Claim(
        "learns 2-layer ReLU nets about as well as a net fitted by GD, far better than least squares",
        ("least_squares", "gd_2nn", "knn_3"), relu_conditions,
    ),
    "decision_tree": Claim(
        "learns decision trees better than greedy tree learning and XGBoost",
        ("xgboost", "decision_tree_4", "decision_tree"), tree_conditions,
    ),
}
SCALES = ("cpu", "paper")
SOURCES = ("train", "pretrained")


def verdict(name: str, metrics: dict) -> dict:
    """The claim's conditions on the standard setting of `metrics` (evaluate's output), with the
    transformer's and the shown comparators' errors and bands at the k the conditions name."""
    claim, s = CLAIMS[name], metrics["settings"]["standard"]
    d, n = metrics["n_dims"], metrics["n_points"]
    conditions = claim.conditions(lambda model, k: s["models"][model]["mean"][k], s, d, n)
    ks = sorted({k for k, _, _ in conditions})
    # keyed by str(k), as they read back from claims.json
    errors = {m: {str(k): [s["models"][m][key][k] for key in ("mean", "lo", "hi")] for k in ks} for m in shown(name, s)}
    return {
        "claim": name, "statement": claim.statement, "n_dims": d, "n_points": n, "ks": ks, "errors": errors,
        "trivial": {str(k): s["trivial"][k] for k in ks},
        "conditions": [{"k": k, "condition": text, "holds": bool(ok)} for k, text, ok in conditions],
        "holds": all(ok for _, _, ok in conditions),
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
        raise ValueError(f"the claims are the transformer's, got model.arch={cfg.model.arch!r}: train other "
                         "architectures with minicl.train and set them side by side with minicl.compare")
    check_config(cfg)
    return cfg


def train_command(overrides: list[str], run_dir: Path) -> None:
    """`python -m minicl.train OVERRIDES` into run_dir (which resumes an interrupted run, and refuses
    one of another config), in a process of its own."""
    cmd = [sys.executable, "-m", "minicl.train", *overrides, f"hydra.run.dir='{run_dir}'"]
    if subprocess.run(cmd).returncode:
        raise RuntimeError(f"training stopped with an error (above): {shlex.join(cmd)}")


def trained_and_evaluated(overrides: list[str], cfg: DictConfig, run_dir: Path, n_prompts: int, device: str) -> dict:
    """Train the run unless it is finished, evaluate it unless metrics.json is newer; its metrics."""
    state = latest_checkpoint(run_dir) if run_dir.exists() else None
    if state is None or state["step"] < cfg.trainer.steps:
        train_command(overrides, run_dir)
    else:
        diffs = config_differences(state["config"], plain(resolved_config(cfg, resolve_device(cfg.trainer.device))))
        if state["step"] != cfg.trainer.steps:
            diffs.append(f"trainer.steps: {state['step']} -> {cfg.trainer.steps}")
        if diffs:
            raise ValueError(f"{run_dir} holds a finished run of another config ({'; '.join(diffs)}); "
                             "move it away or pass another out=")
    return evaluated(run_dir, n_prompts, device)


def evaluated(run_dir: Path, n_prompts: int, device: str) -> dict:
    """The run's metrics on the standard setting: its metrics.json if newer than its checkpoint
    and of `n_prompts` prompts, else a fresh evaluation."""
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists() and metrics_path.stat().st_mtime > (run_dir / "state.pt").stat().st_mtime:
        metrics = json.loads(metrics_path.read_text())
        if metrics["n_prompts"] == n_prompts and "standard" in metrics["settings"]:
            return metrics
    return evaluate_run(run_dir, device=device, settings=["standard"], n_prompts=n_prompts)


def training_curve(run_dir: Path, ks: list[int], metrics: dict, device: str) -> dict:
    """How far training got, and when: the transformer's mean error at `ks` for each snapshot
    model_<step>.pt of the run, on the same prompts as its final evaluation (`metrics`)."""
    snapshots = sorted(run_dir.glob("model_*.pt"), key=lambda path: int(path.stem.removeprefix("model_")))
    curve = {"steps": [], "errors": {str(k): [] for k in ks}}
    if not snapshots:
        return curve
    task_cfg = read_checkpoint(snapshots[0])["config"]["task"]
    task, device = task_from_config(task_cfg), resolve_device(device)
    p = setting_prompts("standard", task, metrics["n_prompts"], metrics["n_points"], metrics["seed"], device,
                        task_cfg.get("noise_std", 1.0))
    for path in snapshots:
        state = read_checkpoint(path)
        with torch.no_grad():
            preds = predict_in_batches(model_from_state(state).to(device), p.xs, p.ys, p.queries)
        errors = pointwise_metric(p.task, preds, p.targets, task.normaliser).mean(0)
        curve["steps"].append(state["step"])
        for k in ks:
            curve["errors"][str(k)].append(errors[k].item())
    return curve


def reproduce(claims: list[str], scale: str = "cpu", out: str | Path = "runs/claims", n_prompts: int = 1280,
              device: str = "auto", overrides: list[str] = (), source: str = "train") -> list[dict]:
    """Run, evaluate and judge each claim; writes OUT/<scale>/claims.json and figures, prints the table.
    source="pretrained" judges the shipped claim models instead, with no training (OUT/pretrained/)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "pretrained" and scale != "cpu":
        raise ValueError(f"source=pretrained judges the CPU-size claim models shipped with minicl; scale={scale} has none")
    out = Path(out) / (scale if source == "train" else "pretrained")
    configs = {name: claim_config(name, scale, list(overrides)) for name in claims}  # every config checked first
    results, panels = [], {}
    for name, cfg in configs.items():
        print(f"claim {name}: {CLAIMS[name].statement} ({out / name})")
        started = time.perf_counter()
        if source == "train":
            metrics = trained_and_evaluated(claim_overrides(name, scale, list(overrides)), cfg, out / name, n_prompts, device)
            result = verdict(name, metrics)
            result |= {"run": str(out / name), "train_seconds": training_seconds(out / name),
                       "curve": training_curve(out / name, result["ks"], metrics, device)}
        else:
            metrics, result = shipped_verdict(name, out / name, n_prompts, device)
        results.append(result | {"total_seconds": time.perf_counter() - started})
        panels[name] = metrics["settings"]["standard"]
        write_json(out / "claims.json", results)  # after each claim: nothing lost
    plot_claims(panels, out)
    plot_curves(results, out)
    print(format_verdicts(results))
    return results


def shipped_verdict(name: str, out: Path, n_prompts: int, device: str) -> tuple[dict, dict]:
    """The shipped claim model (pretrained:<name>) evaluated into `out`, judged, with its recorded
    training time and curve."""
    shipped = shipped_info(name)
    metrics = evaluate_run(PRETRAINED + name, device=device, settings=["standard"], n_prompts=n_prompts, out_dir=out)
    result = verdict(name, metrics)
    curve = {"steps": shipped["curve"]["steps"], "errors": {str(k): shipped["curve"]["errors"][str(k)] for k in result["ks"]}}
    return metrics, result | {"run": PRETRAINED + name, "train_seconds": shipped["train_seconds"], "curve": curve}


# ---------------------------------------------------------------- table and figures


def format_verdicts(results: list[dict]) -> str:
    lines = []
    for r in results:
        verdict_word = "HOLDS" if r["holds"] else "DOES NOT HOLD"
        lines.append(f"{r['claim']} (d={r['n_dims']}): {r['statement']}: {verdict_word}"
                     f"  [trained {r['train_seconds'] / 60:.1f} min]")
        for k in map(str, r["ks"]):
            errs = ", ".join(f"{m} {e[k][0]:.4f} [{e[k][1]:.4f}, {e[k][2]:.4f}]" for m, e in r["errors"].items())
            lines.append(f"  k={k}: {errs}; predict 0 {r['trivial'][k]:.4f}")
        lines += [f"  {'yes' if c['holds'] else 'NO '}  k={c['k']}: {c['condition']}" for c in r["conditions"]]
        for k, errs in r["curve"]["errors"].items():
            lines.append(f"  transformer at k={k} during training: " + ", ".join(f"{step} {e:.3f}" for step, e in zip(r["curve"]["steps"], errs)))
    return "\n".join(lines)


def panel_grid(plt, n: int, width: float, height: float):
    """A figure of n panels of width x height inches, two a row (a spare one switched off)."""
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat[:n]


def plot_claims(panels: dict[str, dict], out: Path) -> None:
    """One figure per claim (claim_<task>.png) and all of them side by side (claims.png)."""
    plt = pyplot()
    for name, s in panels.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        draw_setting(ax, s, f"{name}: {CLAIMS[name].statement}", shown(name, s))
        ax.title.set_fontsize(8)
        save_figure(fig, out / f"claim_{name}.png")
    fig, axes = panel_grid(plt, len(panels), 6, 4)
    for ax, (name, s) in zip(axes, panels.items()):
        draw_setting(ax, s, name, shown(name, s))
    save_figure(fig, out / "claims.png", dpi=100)


def plot_curves(results: list[dict], out: Path) -> None:
    """training.png: the transformer's error at each criterion's k against training steps, one
    panel per claim, with the comparators' final errors and predicting 0 at that k as horizontal lines."""
    plt = pyplot()
    fig, axes = panel_grid(plt, len(results), 6, 3.6)
    for ax, r in zip(axes, results):
        for i, (k, errs) in enumerate(r["curve"]["errors"].items()):
            ax.plot(r["curve"]["steps"], errs, "o-", color=f"C{i}", label=f"transformer, k={k}")
            for j, (model, e) in enumerate((m, e) for m, e in r["errors"].items() if m != "transformer"):
                ax.axhline(e[k][0], color=f"C{i}", ls=("--", ":", "-.", (0, (1, 3)))[j % 4], lw=0.8, label=f"{model}, k={k}")
            ax.axhline(r["trivial"][k], color="k", ls="--", lw=0.6)
        top = max([*r["trivial"].values(), *(e for errs in r["curve"]["errors"].values() for e in errs)], default=1.0)
        ax.set(title=f"{r['claim']} (black: predict 0)", xlabel="training step", ylabel="error", ylim=(0, 1.1 * top))
        ax.legend(fontsize=6)
    save_figure(fig, out / "training.png", dpi=100)


# ---------------------------------------------------------------- command line


register_schemas()


@hydra.main(version_base=None, config_path=str(CONF), config_name="reproduce")
def main(cfg: DictConfig) -> None:
    reproduce(list(cfg.claims), cfg.scale, cfg.out, cfg.n_prompts, cfg.device, list(cfg.overrides), cfg.source)


if __name__ == "__main__":
    main()
