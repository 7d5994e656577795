"""Claim (b) against minutes of CPU training: python examples/sparse_budget.py

Draws docs/figures/sparse_budget.png from examples/sparse_budget.json (measurements of the recipes
tried for the claim, kept in CHANGELOG.md's history; the runs are not kept): each seed-0 recipe's
error at k = d/2 = 5 against the minutes it had trained, with seed 0's least squares, best Lasso,
exact posterior mean (bayes_sparse) and criterion as horizontal lines. Rows of other seeds are left
out: seed 0's lines are not theirs.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STYLES = {
    "least squares": ("k", "--"),
    "best Lasso": ("grey", "--"),
    "bayes_sparse": ("purple", ":"),
    "criterion (at most)": ("red", "-"),
}


def main() -> None:
    table = json.loads((ROOT / "examples/sparse_budget.json").read_text())
    recipes: dict[str, list[tuple[float, float]]] = {}
    for recipe, _, minutes, error in table["rows"]:
        if "seed" in recipe and "seed 0" not in recipe:
            continue
        recipes.setdefault(recipe.replace("`", ""), []).append((float(minutes), float(error)))
    fig, ax = plt.subplots(figsize=(10, 4))
    for recipe, points in recipes.items():
        ax.plot(*zip(*points), "o-", ms=3, label=recipe)
    for name, level in table["levels"].items():
        color, style = STYLES[name]
        ax.axhline(level, color=color, ls=style, lw=1, label=name)
    ax.set(
        xlabel="minutes of training on 2 CPU cores",
        ylabel="error at k = d/2 = 5 (squared error / normaliser)",
        title="claim (b), sparse linear (2 of 10 dims), seed 0: each recipe's runs against minutes",
        ylim=(-0.02, 1.0),
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(ROOT / "docs/figures/sparse_budget.png", dpi=120)


if __name__ == "__main__":
    main()
