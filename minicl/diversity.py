"""Task diversity as Raventós et al. 2023 ("Pretraining task diversity and the emergence of
non-Bayesian in-context learning for regression") measure it:
`python -m minicl.diversity DIR... --out FILE [--n-prompts N]`.

Each DIR is a run trained on a finite pool of tasks (task.num_tasks) or on fresh tasks, or a
folder of such runs (a sweep over pool sizes and seeds). On fresh tasks, each pool run's
predictions are compared with those of dmmse (Bayes-optimal for its own pool) and ridge
(Bayes-optimal for fresh Gaussian tasks): the mean squared distance between predictions over the
positions k = 1 .. N-1, with a paired bootstrap band on (to dmmse) - (to ridge). Per seed, the
threshold is the smallest pool size from which on every run is closer to ridge, every smaller
pool's run being closer to dmmse; where the runs do not fall in that order, the seed has no
threshold. A run on fresh tasks gives the model's error over ridge's at k = D and k = 2D.
"""

import argparse
import sys
from pathlib import Path

import torch

from minicl.algorithm_probe import band
from minicl.common import bootstrap_counts, predict_in_batches, write_json
from minicl.config import task_from_config
from minicl.evaluate import fresh_ridge, pool_baselines
from minicl.mechanism import runs_in
from minicl.rundir import model_from_state, read_prompt_run, stamp
from minicl.settings import setting_prompts
from minicl.tasks import Linear


def closeness(preds: torch.Tensor, dmmse: torch.Tensor, ridge: torch.Tensor, counts: torch.Tensor) -> dict:
    """Distances of preds (B, N) to dmmse's and ridge's predictions, per prompt the mean over the
    positions k >= 1 (k = 0 has no pairs), then over prompts; the band of their difference over
    the bootstrap resamples `counts`, and which one the predictions are closer to (`tie` where
    the band reaches 0)."""
    to = {name: ((preds - other).double()[:, 1:] ** 2).mean(1) for name, other in (("dmmse", dmmse), ("ridge", ridge))}
    difference = band(counts @ (to["dmmse"] - to["ridge"]) / len(preds))
    closer = "dmmse" if difference[1] < 0 else "ridge" if difference[0] > 0 else "tie"
    return {"to_dmmse": to["dmmse"].mean().item(), "to_ridge": to["ridge"].mean().item()} | {
        "difference_band": difference,
        "closer": closer,
    }


def threshold(closer_by_pool: dict[int, str]) -> dict:
    """From {pool size: 'dmmse' | 'ridge' | 'tie'} of one seed: the smallest pool from which on every
    run is closer to ridge, with every smaller one closer to dmmse (and at least one of each);
    otherwise no threshold, and the order is reported as not holding."""
    sizes = sorted(closer_by_pool)
    order = [closer_by_pool[m] for m in sizes]
    first = next((i for i, c in enumerate(order) if c != "dmmse"), len(order))
    holds = 0 < first < len(order) and all(c == "ridge" for c in order[first:])
    return {"threshold": sizes[first] if holds else None, "holds": holds, "order": dict(zip(map(str, sizes), order))}


def judge(runs: list[dict]) -> dict:
    """Per seed the threshold of its pool runs; the verdict holds if every seed has one, and its
    band is the range of the seeds' thresholds."""
    seeds: dict[int, dict[int, str]] = {}
    for r in runs:
        if r["num_tasks"] is not None:
            seeds.setdefault(r["seed"], {})[r["num_tasks"]] = r["fresh"]["closer"]
    per_seed = {str(s): threshold(by_pool) for s, by_pool in sorted(seeds.items())}
    found = [t["threshold"] for t in per_seed.values() if t["holds"]]
    holds = bool(per_seed) and len(found) == len(per_seed)
    return {"per_seed": per_seed, "holds": holds, "threshold_band": [min(found), max(found)] if holds else None}


def measure(run: str, n_prompts: int, seed: int) -> dict:
    """One run on fresh tasks (and on its pool's, for a pool run): its errors at k = D and 2D beside
    dmmse's and ridge's, and for a pool run how close its predictions are to each."""
    state = read_prompt_run(run)
    task_cfg, trainer = state["config"]["task"], state["config"]["trainer"]
    task, model = task_from_config(task_cfg), model_from_state(state)
    n_points, num_tasks = task_cfg["curriculum"]["points"]["end"], task_cfg.get("num_tasks")
    if not isinstance(task, Linear) or not task.linear_pool:
        raise ValueError(f"{run}: python -m minicl.diversity reads runs of linear tasks, not task={task_cfg['name']}")
    baselines = pool_baselines(task_cfg, trainer["seed"]) if num_tasks else {"ridge": fresh_ridge(task)}
    ks = [min(k, n_points - 1) for k in (task.n_dims, 2 * task.n_dims)]
    out: dict = {"run": run, "num_tasks": num_tasks, "seed": trainer["seed"], "ks": ks}
    pool = {"noise_std": task_cfg.get("noise_std", 1.0), "num_tasks": num_tasks, "pool_seed": trainer["seed"]}
    for setting in ("standard", "pool_tasks") if num_tasks else ("standard",):
        p = setting_prompts(setting, task, n_prompts, n_points, seed, **pool)
        with torch.no_grad():
            preds = {"model": predict_in_batches(model, p.xs, p.ys)} | {n: b(p.xs, p.ys) for n, b in baselines.items()}
        errors = {n: [((v - p.targets)[:, k] ** 2).mean().item() / task.n_dims for k in ks] for n, v in preds.items()}
        entry: dict = {"errors": errors}
        if num_tasks:
            counts = bootstrap_counts(n_prompts, seed)
            entry |= closeness(preds["model"], preds["dmmse"], preds["ridge"], counts)
        out["fresh" if setting == "standard" else "pool"] = entry
    if not num_tasks:
        out["ratio_to_ridge"] = [
            m / r for m, r in zip(out["fresh"]["errors"]["model"], out["fresh"]["errors"]["ridge"])
        ]
    return out


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(prog="python -m minicl.diversity", description=__doc__.split("\n\n")[0])
    out.add_argument("runs", nargs="+", help="runs, or folders of runs (a sweep over task.num_tasks and seeds)")
    out.add_argument("--out", required=True, help="the results JSON to write")
    out.add_argument("--n-prompts", type=int, default=1280)
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    provenance = stamp("python -m minicl.diversity " + " ".join(sys.argv[1:] if argv is None else argv), "diversity")
    runs = [measure(run, args.n_prompts, seed=0) for run in runs_in(args.runs)]
    report = {"n_prompts": args.n_prompts, "runs": runs} | judge(runs) | provenance
    write_json(Path(args.out), report)
    for s, t in report["per_seed"].items():
        print(f"seed {s}: {t['order']} -> threshold {t['threshold']}")
    return report


if __name__ == "__main__":
    main()
