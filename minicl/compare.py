"""Runs side by side: `python -m minicl.compare DIR... [out=DIR] [n_prompts=N] [device=cpu]`.

Each DIR is a run directory or a directory holding runs (a sweep's). The runs are grouped by the
config values that differ between them, other than the seed and the knobs that do not change
results; a group's seeds are drawn as their mean with a min-max band. Writes, to `out` (default:
`compare/` in the one DIR given, or in the runs' common parent):
- loss.png: training loss against step, a line per group;
- error.png: error against k on the standard setting (fresh tasks), and on the pool's tasks for
  runs trained on a finite pool, with the first run's baselines; a run with no metrics.json for
  those settings is evaluated first (its metrics.json is written as `minicl.evaluate` writes it);
- table.md: the error at k = d/2, d, 2d per group and setting (mean over seeds, min-max), also printed;
- for runs that differ in one knob only (a sweep over it), sweep.png: every model's error at k = d
  against the knob, and its table in table.md.
Runs of different tasks or dims are refused, naming them.
"""

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from minicl.config import RESUMABLE_CHANGES, migrated
from minicl.evaluate import evaluate_run, table_ks
from minicl.model import MODELS
from minicl.plots import TRAINED, compare_errors_figure, compare_sweep_figure, loss_figure
from minicl.rundir import STATE, read_log, read_run

IGNORED = {"trainer.seed", *(f"trainer.{key}" for key in RESUMABLE_CHANGES - {"steps"})}  # and logger.*
OPTIONS = {"out": str, "n_prompts": int, "device": str}
SETTINGS = {"standard": "fresh tasks", "pool_tasks": "the pool's tasks"}


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories (those holding a checkpoint): each path itself, or every one below it."""
    runs = []
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a directory")
        found = [path] if (path / STATE).exists() else sorted(p.parent for p in path.rglob(STATE))
        if not found:
            raise FileNotFoundError(f"no run (a directory with {STATE}) in {path}")
        runs += found
    return list(dict.fromkeys(runs))


def flatten(tree: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing_keys(configs: dict[Path, dict]) -> list[str]:
    """The config keys whose values differ between the runs, seeds and knobs that do not change results aside."""
    flat = [flatten(cfg) for cfg in configs.values()]
    keys = sorted(set().union(*flat))
    return [
        k
        for k in keys
        if k not in IGNORED and not k.startswith("logger.") and len({json.dumps(f.get(k)) for f in flat}) > 1
    ]


def group_runs(configs: dict[Path, dict]) -> dict[str, list[Path]]:
    """{label: runs}: the label names the values that differ between the runs (seeds aside)."""
    flat = {run: flatten(cfg) for run, cfg in configs.items()}
    differing = differing_keys(configs)
    groups: dict[tuple, list[Path]] = {}
    for run, f in flat.items():
        groups.setdefault(tuple(f.get(k) for k in differing), []).append(run)

    def order(values: tuple) -> tuple:  # numbers by value (2 < 16), the rest as text
        return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in values)

    return {
        (", ".join(f"{k}={v}" for k, v in zip(differing, values)) or "all runs"): groups[values]
        for values in sorted(groups, key=order)
    }


def check_comparable(configs: dict[Path, dict]) -> None:
    kinds = {run: (cfg["task"]["name"], cfg["task"]["n_dims"]) for run, cfg in configs.items()}
    if len(set(kinds.values())) > 1:
        named = "; ".join(f"{run}: {name}, {d} dims" for run, (name, d) in kinds.items())
        raise ValueError(f"runs of different tasks or dims cannot be compared: {named}")


def run_settings(cfg: dict) -> list[str]:
    """Fresh tasks, the pool's tasks for a run trained on a finite pool, and a mixture's components alone."""
    components = [f"component_{i}" for i in range(len(cfg["task"].get("components") or ()))]
    return (list(SETTINGS) if cfg["task"].get("num_tasks") else ["standard"]) + components


def setting_title(setting: str) -> str:
    return SETTINGS.get(setting, setting.replace("_", " ") + " alone")


def run_metrics(run: Path, settings: list[str], n_prompts: int, device: str) -> dict:
    """The run's metrics.json if it covers `settings`, else a fresh evaluation on them."""
    path = run / "metrics.json"
    if path.exists():
        metrics = json.loads(path.read_text())
        if set(settings) <= metrics["settings"].keys():
            return metrics
    return evaluate_run(run, device=device, settings=settings, n_prompts=n_prompts, progress=False)


def loss_curve(run: Path) -> tuple[np.ndarray, np.ndarray]:
    records = read_log(run)
    return np.array([r["step"] for r in records]), np.array([r["loss"] for r in records])


def spread(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, min, max) over curves, on the x values they all have."""
    xs = sorted(set.intersection(*(set(x.tolist()) for x, _ in curves)))
    ys = np.array([[dict(zip(x.tolist(), y.tolist()))[v] for v in xs] for x, y in curves])
    return np.array(xs), ys.mean(0), ys.min(0), ys.max(0)


def compare(
    paths: Sequence[str | Path], out: str | Path | None = None, n_prompts: int = 1280, device: str = "auto"
) -> str:
    """Compare the runs in `paths`; writes loss.png, error.png and table.md to `out`; returns the table."""
    dirs = [Path(p) for p in paths]
    runs = find_runs(dirs)
    configs = {run: migrated(read_run(run)["config"]) for run in runs}
    check_comparable(configs)
    groups = group_runs(configs)
    metrics = {run: run_metrics(run, run_settings(cfg), n_prompts, device) for run, cfg in configs.items()}
    wanted = dict.fromkeys(s for cfg in configs.values() for s in run_settings(cfg))
    settings = [s for s in wanted if any(s in m["settings"] for m in metrics.values())]
    if out is None:  # compare/ in the one directory given, or in the runs' common parent
        one = len(dirs) == 1 and dirs[0] not in runs
        out = (dirs[0] if one else Path(os.path.commonpath([r.resolve().parent for r in runs]))) / "compare"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    draw_losses(groups, out / "loss.png")
    first = metrics[runs[0]]
    draw_errors(groups, metrics, settings, first, out / "error.png")
    n_points = min(m["n_points"] for m in metrics.values())
    table = format_table(groups, metrics, settings, table_ks(first["n_dims"], n_points))
    swept = differing_keys(configs)
    if len(swept) == 1:  # a one-knob sweep: every model's error at k = d against the knob
        k = min(first["n_dims"], n_points - 1)
        values = {label: flatten(configs[members[0]])[swept[0]] for label, members in groups.items()}
        at_k = errors_at(groups, metrics, settings, k)
        titles = {setting: f"{setting_title(setting)}\nruns in {runs_dir(groups)}" for setting in settings}
        compare_sweep_figure(swept[0], values, at_k, k, titles, out / "sweep.png")
        table += "\n\n" + format_sweep(at_k, k)
    (out / "table.md").write_text(table + "\n")
    print(table)
    print(f"written to {out}: loss.png, error.png, table.md" + (", sweep.png" if len(swept) == 1 else ""))
    return table


def trained_label(labels) -> str:
    """Which of a metrics file's predictors is the run's own model: it is labelled by its arch
    (transformer, lstm, ...), the baselines by theirs."""
    return next(label for label in labels if label in MODELS)


def trained_errors(runs: list[Path], metrics: dict, setting: str) -> list[np.ndarray]:
    """Per run, the trained model's mean error against k, cut to the shortest prompts of all runs."""
    n = min(m["n_points"] for m in metrics.values())
    models = [metrics[r]["settings"][setting]["models"] for r in runs if setting in metrics[r]["settings"]]
    return [np.array(m[trained_label(m)]["mean"][:n]) for m in models]


def format_table(groups: dict[str, list[Path]], metrics: dict, settings: list[str], ks: list[int]) -> str:
    lines = [
        "| group | setting | seeds | " + " | ".join(f"k = {k}" for k in ks) + " |",
        "|---|---|---|" + "---|" * len(ks),
    ]
    for label, runs in groups.items():
        for setting in settings:
            per_run = trained_errors(runs, metrics, setting)
            if not per_run:
                continue
            errors = np.stack(per_run)
            cells = [
                f"{errors[:, k].mean():.3f}"
                + (f" [{errors[:, k].min():.3f}, {errors[:, k].max():.3f}]" if len(errors) > 1 else "")
                for k in ks
            ]
            lines.append(f"| {label} | {setting} | {len(errors)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def errors_at(groups: dict[str, list[Path]], metrics: dict, settings: list[str], k: int) -> dict:
    """{group: {setting: {model: [mean error at k, per run]}}}, the runs' own models as TRAINED."""
    out: dict[str, dict] = {}
    for label, runs in groups.items():
        out[label] = {}
        for setting in settings:
            models: dict[str, list[float]] = {}
            for run in runs:
                for model, m in metrics[run]["settings"].get(setting, {"models": {}})["models"].items():
                    models.setdefault(TRAINED if model in MODELS else model, []).append(m["mean"][k])
            if models:
                out[label][setting] = models
    return out


def format_sweep(at_k: dict, k: int) -> str:
    """Every model's error at k per group and setting (mean over seeds)."""
    models = list(
        dict.fromkeys(m for per_setting in at_k.values() for per_model in per_setting.values() for m in per_model)
    )
    lines = [
        f"error at k = {k}",
        "",
        "| group | setting | " + " | ".join(models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    for label, per_setting in at_k.items():
        for setting, per_model in per_setting.items():
            cells = [f"{np.mean(per_model[m]):.3f}" if m in per_model else "" for m in models]
            lines.append(f"| {label} | {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_dir(groups: dict[str, list[Path]]) -> str:
    """The directory that holds all the runs, for the figures' titles."""
    return os.path.commonpath([str(r) for runs in groups.values() for r in runs])


def draw_losses(groups: dict[str, list[Path]], path: Path) -> None:
    """loss.png: each group's training loss, the mean and min-max over its runs."""
    loss_figure({label: (*spread([loss_curve(r) for r in runs]), len(runs)) for label, runs in groups.items()}, path)


def draw_errors(groups: dict[str, list[Path]], metrics: dict, settings: list[str], first: dict, path: Path) -> None:
    """error.png: a panel per setting, each group's trained models and the first run's baselines."""
    panels = []
    for setting in settings:
        errors = {label: np.stack(e) for label, runs in groups.items() if (e := trained_errors(runs, metrics, setting))}
        reference = next(metrics[r] for runs in groups.values() for r in runs if setting in metrics[r]["settings"])
        title = f"{first['task']}, {first['n_dims']} dims: {setting_title(setting)}\nruns in {runs_dir(groups)}"
        panels.append({"title": title, "groups": errors, "setting": reference["settings"][setting]})
    compare_errors_figure(panels, path)


def main(argv: list[str]) -> None:
    dirs, options = [], {}
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in OPTIONS and value:
            options[key] = OPTIONS[key](value)
        else:
            dirs.append(arg)
    if not dirs:
        raise SystemExit(__doc__)
    compare(dirs, **options)


if __name__ == "__main__":
    main(sys.argv[1:])
