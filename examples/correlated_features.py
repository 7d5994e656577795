"""How correlated a real table's features are against the `tables` prior's, and what the
regressor scores when each context is whitened first (a diagnostic; the shipped regressor does not
whiten, and no model was trained on whitened contexts):

    python examples/correlated_features.py --model runs/ship/tables --seeds 100-109

Per table: the median over the splits of the smallest singular value of the standardised 40-row
context over sqrt(40) (1 for uncorrelated features, 0 for collinear ones), and the mean R² with and
without whitening (the standardised features rotated onto their principal axes and scaled to unit
variance, the queries mapped alike). Then the same singular value in the prior's contexts.
"""

import argparse

import numpy as np
import torch
from omegaconf import OmegaConf
from real_data import TABLES, load, parse_seeds, score_table

from minicl.config import task_from_config
from minicl.estimators import ICLRegressor
from minicl.rundir import read_run
from minicl.tasks import PromptSampler, make_generators

CONTEXT = 40


def smallest_singular(X: np.ndarray) -> float:
    """The smallest singular value of X standardised, over sqrt(rows)."""
    Z = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)
    return float(np.linalg.svd(Z / np.sqrt(len(Z)), compute_uv=False).min())


class Whitened(ICLRegressor):
    """ICLRegressor reading its context's features whitened (and its queries mapped alike)."""

    def fit(self, X, y):
        self.mu_, sd = X.mean(0), np.where(X.std(0) > 0, X.std(0), 1)
        _, s, vt = np.linalg.svd((X - self.mu_) / sd, full_matrices=False)
        keep = s > 1e-6 * s[0]
        self.map_ = (vt[keep].T / s[keep] * np.sqrt(len(X))) / sd[:, None]
        return super().fit((X - self.mu_) @ self.map_, y)

    def predict(self, X) -> np.ndarray:
        return super().predict((X - self.mu_) @ self.map_)


def prior_conditioning(model: str, features: list[int], n_prompts: int = 2000) -> dict[int, float]:
    """The median smallest singular value of the prior's 40-row contexts with each number of features."""
    cfg = OmegaConf.create(read_run(model)["config"])
    sampler = PromptSampler(task_from_config(cfg.task), CONTEXT, make_generators(0, torch.device("cpu"), "eval"))
    xs, _ = sampler.sample(n_prompts)
    active = (xs.abs().sum(1) > 0).sum(-1)
    by_count = {p: torch.where(active == p)[0] for p in features}
    return {p: float(np.median([smallest_singular(xs[i, :, :p].numpy()) for i in at])) for p, at in by_count.items()}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/ship/tables", help="a tables run directory")
    parser.add_argument("--seeds", default="100-109", help="split seeds, FIRST-LAST")
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    makers = {"as read": lambda: ICLRegressor(args.model), "whitened": lambda: Whitened(args.model)}
    report: dict = {"tables": {}}
    for name in args.tables:
        X, y = load(name)
        orders = [np.random.default_rng(s).permutation(len(y))[:CONTEXT] for s in seeds]
        scores = score_table(X, y, CONTEXT, seeds, makers)
        row = {"smallest_singular": float(np.median([smallest_singular(X[o]) for o in orders]))}
        report["tables"][name] = row | {key: s["mean"] for key, s in scores.items()}
        print(name, {key: round(value, 3) for key, value in report["tables"][name].items()}, flush=True)
    for key in makers:
        print(f"mean R² {key}: {np.mean([row[key] for row in report['tables'].values()]):.3f}")
    report["prior_smallest_singular"] = prior_conditioning(args.model, [7, 13, 16])
    print("prior:", {p: round(v, 3) for p, v in report["prior_smallest_singular"].items()})
    return report


if __name__ == "__main__":
    main()
