"""ICLRegressor on real tables, against scikit-learn's regressors at their defaults (not tuned):
5-fold cross-validated R² (mean ± std over folds) on datasets scikit-learn ships or generates offline.

    python examples/real_data.py      # prints the README's table (about a minute on 2 CPU cores)
"""

import time

import numpy as np
from sklearn.datasets import load_diabetes, load_linnerud, make_friedman1
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_score
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from minicl import ICLRegressor


def linear(noise: float, n: int = 400, d: int = 10, seed: int = 0):
    """y = x . w for x, w ~ N(0, I), plus noise of `noise` times the signal's variance."""
    rng = np.random.default_rng(seed)
    X, w = rng.normal(size=(n, d)), rng.normal(size=d)
    return X, X @ w + np.sqrt(noise * d) * rng.normal(size=n)


DATASETS = {  # name: (X, y, what it is)
    "diabetes": (*load_diabetes(return_X_y=True), "442 patients, 10 features, disease progression"),
    "linnerud": (load_linnerud().data, load_linnerud().target[:, 0], "20 athletes, 3 exercises, body weight (lb)"),
    "friedman1": (
        *make_friedman1(n_samples=400, noise=1.0, random_state=0),
        "generated: 400 rows, 10 features (5 used), nonlinear",
    ),
    "linear": (*linear(0.0), "generated: 400 rows, y = x . w, 10 features, no noise"),
    "linear + noise": (*linear(1.0), "the same with noise of the signal's variance"),
}
MODELS = {
    "ICLRegressor (linear_d20; 40 context rows)": lambda: ICLRegressor(long_context="subsample"),
    "Ridge": lambda: make_pipeline(StandardScaler(), Ridge()),
    "k-NN (k = 5)": lambda: make_pipeline(StandardScaler(), KNeighborsRegressor()),
    "gradient boosting": lambda: GradientBoostingRegressor(random_state=0),
}


def main() -> None:
    rows = {}
    for data, (X, y, _) in DATASETS.items():
        cv = KFold(5, shuffle=True, random_state=0)
        for model, make in MODELS.items():
            start = time.perf_counter()
            scores = cross_val_score(make(), X, y, cv=cv, scoring="r2")
            rows.setdefault(model, {})[data] = f"{scores.mean():.3f} ± {scores.std():.3f}"
            print(f"{data}, {model}: {scores.round(3)} ({time.perf_counter() - start:.1f} s)", flush=True)
    print("\n| model | " + " | ".join(DATASETS) + " |\n|---|" + "---|" * len(DATASETS))
    for model, cells in rows.items():
        print(f"| {model} | " + " | ".join(cells[data] for data in DATASETS) + " |")
    print("\n" + "; ".join(f"{name}: {what}" for name, (_, _, what) in DATASETS.items()))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
