"""Every figure minicl draws, from the results its commands compute (plain dicts, as in their JSON).

matplotlib loads with the first figure (pyplot()), not with this module, so the modules that
draw import it at their top and `import minicl.evaluate` still loads no matplotlib. Every figure
is written to a file (with the Agg backend where pyplot is not already in use). A model keeps its
colour in every figure (COLORS).
"""

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minicl.model import MODELS

COLORS = {  # one colour per model in every figure, so that a colour means the same in every panel
    "transformer": "C0",
    "least_squares": "C1",
    "knn_3": "C2",
    "averaging": "C3",
    "gd_2nn": "C4",
    "xgboost": "C5",
    "decision_tree": "C6",
    "decision_tree_4": "C8",
    "bayes_sparse": "C9",
    "ridge": "#393b79",
    "dmmse": "#e7ba52",
    "lasso_1": "#fa9fb5",  # the Lasso family in one hue, lighter for more regularisation
    "lasso_1e-1": "#f768a1",
    "lasso_1e-2": "#dd3497",
    "lasso_1e-3": "#ae017e",
    "lasso_1e-4": "#7a0177",
    "linear_attention": "#8c6d31",
    "lstm": "#637939",
    "mamba": "#843c39",
    "mambaformer": "#ad494a",
    "gaussian_elimination": "#17becf",
    "lookup": "#bcbd22",
}
RUN_COLORS = ["#1f77b4", "#0b1f4d", "#56b4e9", "#8c6d31", "#637939", "#843c39", "#7f7f7f"]  # runs or seeds side by side


TRAINED = "trained model"  # compare's label for each run's own model, whatever its arch


def pyplot() -> Any:
    """matplotlib.pyplot drawing to files (the Agg backend, unless pyplot is already in use, as in a
    notebook: its backend stays, and the figures drawn here are closed once written)."""
    import matplotlib  # deferred: matplotlib loads only when a figure is drawn

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred, as above

    return plt


def integer_ticks(axis: Any) -> None:
    """Ticks at whole numbers only (k, dims) on a matplotlib axis."""
    from matplotlib.ticker import MaxNLocator  # deferred, as matplotlib (pyplot)

    axis.set_major_locator(MaxNLocator(integer=True))


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Lay out, write and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def model_color(name: str) -> str:
    """The model's colour (COLORS; other names by a stable hash into a palette of their own)."""
    return COLORS.get(name) or ["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"][sum(map(ord, name)) % 5]


def panel_grid(n: int, width: float, height: float, cols: int = 2, **kwargs: Any) -> tuple[Any, list]:
    """A figure of n panels of width x height inches, `cols` a row (spare ones switched off)."""
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, **kwargs)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


# ---------------------------------------------------------------- evaluate: error against k


def setting_figure(name: str, s: dict, path: Path) -> None:
    """plots/<setting>.png of minicl.evaluate: every model of one setting."""
    fig, ax = pyplot().subplots(figsize=(6, 4))
    draw_setting(ax, s, name)
    save_figure(fig, path)


def draw_setting(ax: Any, s: dict, title: str, models: Sequence[str] | None = None) -> None:
    """Error (or accuracy) against k with bootstrap bands, one line per model (all by default),
    and the trivial predictor's level."""
    for model in models or list(s["models"]):
        m = s["models"][model]
        k = range(len(m["mean"]))
        ax.plot(k, m["mean"], label=model, lw=2 if model in MODELS else 1.2, color=model_color(model))
        ax.fill_between(k, m["lo"], m["hi"], color=model_color(model), alpha=0.2)
    accuracy = s["metric"] == "accuracy"
    ax.plot(range(len(s["trivial"])), s["trivial"], "k--", lw=1, label="chance" if accuracy else "trivial (predict 0)")
    integer_ticks(ax.xaxis)
    ax.set_xlabel("in-context examples")
    ax.set_ylabel("accuracy" if accuracy else "squared error / normaliser")
    if not accuracy:
        ax.set_ylim(0, 1.25 * max(s["trivial"]))
    ax.set_title(title)
    ax.legend(fontsize=7)


# ---------------------------------------------------------------- explore: sweeps and the probe


def sweep_figures(out: dict, label: str, log: bool, out_dir: Path) -> None:
    """<sweep>.png: every model's error at k against the swept value (`label` on a log axis if
    `log`); <sweep>_curves.png: error against k, a panel per value (the length sweep: its one long
    prompt, which holds every shorter one)."""
    sweep, results = out["sweep"], out["results"]
    values = [r["value"] for r in results]
    models = list(results[0]["models"])
    ks = [int(v) if sweep == "length" else out["k"] for v in values]  # the k each value is read at
    fig, ax = pyplot().subplots(figsize=(7.5, 4))
    for name in models:
        mean, lo, hi = ([r["models"][name][key][k] for r, k in zip(results, ks)] for key in ("mean", "lo", "hi"))
        ax.plot(values, mean, "o-", label=name, lw=2 if name in MODELS else 1.2, ms=3, color=model_color(name))
        ax.fill_between(values, lo, hi, color=model_color(name), alpha=0.2)
    if sweep == "length":
        ax.axvline(out["train_points"] - 1, color="gray", ls=":", label="training length")
    ax.axhline(1.0, color="k", ls="--", lw=1, label="predict 0")
    ax.set_xscale("log" if log else "linear")
    if sweep in ("length", "dims"):
        integer_ticks(ax.xaxis)
    highest = {name: max(r["models"][name]["mean"][k] for r, k in zip(results, ks)) for name in models}
    # the model's every point shown (label noise puts it far above 1), and the baselines near it
    trained = highest[out["arch"]]
    ax.set_ylim(0, 1.1 * max([1.4, trained, *(h for h in highest.values() if h <= 2 * trained)]))
    ax.set_xlabel(label)
    ax.set_ylabel("error / signal" + ("" if sweep == "length" else f" at k={out['k']}"))
    model = out["arch"] + (f", pos_emb={out['pos_emb']}" if out["pos_emb"] else "")
    ax.set_title(f"{sweep} sweep: run {out.get('run', '?')}\n({out['task']}, {model})", fontsize=9)
    outside_legend(ax)
    save_figure(fig, out_dir / f"{sweep}.png")
    sweep_curves(sweep, results if sweep != "length" else results[-1:], out_dir, out.get("run", "?"))


def sweep_curves(sweep: str, shown: list[dict], out_dir: Path, run: str) -> None:
    models = list(shown[0]["models"])
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    trained = [name for name in models if name in MODELS] or models  # every point of the model shown
    top = max(1.5, 1.1 * max(max(r["models"][name]["mean"][1:]) for r in shown for name in trained))
    size = (max(6, 3 * cols) / cols, max(4, 2.4 * rows) / rows)
    fig, axes = panel_grid(len(shown), *size, cols=cols, sharey=True)
    axes[0].set_ylim(0, top)  # shared by every panel
    for ax, r in zip(axes, shown):
        for name in models:
            m = r["models"][name]
            ax.plot(m["mean"], lw=1.5 if name in MODELS else 1, label=name, color=model_color(name))
            ax.fill_between(range(len(m["mean"])), m["lo"], m["hi"], color=model_color(name), alpha=0.2)
        ax.set_title(f"{sweep} = {r['value']:g}", fontsize=8)
    axes[0].legend(fontsize=6)
    fig.suptitle(f"{sweep} sweep: run {run}", fontsize=9)
    fig.supxlabel("in-context examples")
    fig.supylabel("error / signal")
    save_figure(fig, out_dir / f"{sweep}_curves.png", dpi=100)


def probe_figure(report: dict, path: Path) -> None:
    """explore/probe.png: the implicit weights against least squares' and ridge's, per k."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(9, 3.5))
    for name in ("least_squares", "ridge"):
        label = name + (f" (lam={report['ridge_lam']:g})" if name == "ridge" else "")
        for ax, key in ((left, "cosine"), (right, "rel_error")):
            values = report[name][key]
            ks = [k for k, v in enumerate(values) if v is not None]
            ax.plot(ks, [values[k] for k in ks], "o-", ms=3, label=label)
    left.set_ylabel("cosine(implicit w, w)")
    right.set_ylabel("||implicit w - w|| / ||w||")
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xlabel("in-context examples")
        ax.axvline(report["k"] / 2, color="gray", ls=":", lw=1, label="k = d")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{report['task']}, run {report['run']}: the implicit weights (gradient of the prediction w.r.t. the query)",
        fontsize=9,
    )
    save_figure(fig, path)


# ---------------------------------------------------------------- reproduce: the claims


def runs_shown(c: dict) -> str:
    """A claim's panel title: the claim, its dims and its runs (OUT/<scale>/<claim>, the seeds)."""
    first = Path(c["runs"][0]["run"])
    where = str(first) if len(c["runs"]) == 1 else f"{first.parent}, seeds {', '.join(map(str, c['seeds']))}"
    return f"{c['claim']}, d = {c['n_dims']}: {where}"


def outside_legend(ax: Any) -> None:
    """The legend right of the panel, where it covers no data."""
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


def claims_figures(panels: dict[str, list[dict]], results: list[dict], out: Path) -> None:
    """One figure per claim (claim_<task>.png) and all of them side by side (claims.png): the
    comparators on the first seed's prompts, the transformer of every seed, the k each criterion reads."""
    fig, axes = panel_grid(len(results), 7, 4, cols=2 if len(results) % 2 == 0 else 3)  # no blank panel
    for ax, r in zip(axes, results):
        draw_claim(ax, panels[r["claim"]], r, runs_shown(r))
    save_figure(fig, out / "claims.png", dpi=100)
    for r in results:
        fig, ax = pyplot().subplots(figsize=(7.5, 4))
        draw_claim(ax, panels[r["claim"]], r, f"{r['claim']}: {r['statement']}\n{runs_shown(r)}")
        save_figure(fig, out / f"claim_{r['claim']}.png")


def draw_claim(ax: Any, settings: list[dict], r: dict, title: str) -> None:
    """A claim's panel: the comparators its first seed's verdict shows, every seed's transformer
    (a colour and a line style each), the k each criterion reads."""
    seeds = r["seeds"]
    comparators = [m for m in r["runs"][0]["errors"] if m != "transformer"]
    note = f" (comparators: seed {seeds[0]}'s prompts)" if len(seeds) > 1 else ""
    draw_setting(ax, settings[0], title + note, comparators)
    for i, (seed, s) in enumerate(zip(seeds, settings)):
        m, color = s["models"]["transformer"], RUN_COLORS[i % len(RUN_COLORS)]
        ax.plot(m["mean"], color=color, lw=2, ls=("-", "--", ":")[i % 3], label=f"transformer, seed {seed}")
        ax.fill_between(range(len(m["mean"])), m["lo"], m["hi"], color=color, alpha=0.15)
    for i, k in enumerate(r["ks"]):
        ax.axvline(k, color="grey", lw=0.8, ls=":", label="k a criterion reads" if i == 0 else None)
    ax.title.set_fontsize(8)
    outside_legend(ax)


def training_figure(results: list[dict], out: Path) -> None:
    """training.png: the transformer's error at a criterion's k against training steps, a panel per
    claim and k (over seeds: the mean and the band from the lowest to the highest), with the
    comparators' final errors (mean over seeds), predicting 0 and the criterion's bound as lines."""
    shown = [(c, k) for c in results for k in c["ks"]]
    fig, axes = panel_grid(len(shown), 6.5, 3.4, cols=2)
    for ax, (c, k) in zip(axes, shown):
        top = draw_training_at(ax, c, k)
        ax.set(xlabel="training step", ylabel="squared error / normaliser", ylim=(0, 1.1 * top))
        ax.set_title(f"error at k = {k} while training: {runs_shown(c)}", fontsize=8)
        outside_legend(ax)
    save_figure(fig, out / "training.png", dpi=100)


def draw_training_at(ax: Any, c: dict, k: int) -> float:
    """One k of a claim: the transformer's curve, each comparator, predicting 0, the criterion;
    returns the highest level drawn."""
    runs, key = c["runs"], str(k)  # claims.json keys its k as strings
    steps = min((r["curve"]["steps"] for r in runs), key=len)
    errs = np.array([r["curve"]["errors"][key][: len(steps)] for r in runs]).reshape(len(runs), len(steps))
    if len(steps):
        label = "transformer" + " (mean over seeds)" * (len(runs) > 1)
        ax.plot(steps, errs.mean(0), "o-", color=model_color("transformer"), label=label)
        ax.fill_between(steps, errs.min(0), errs.max(0), color=model_color("transformer"), alpha=0.2)
    bounded = [[v["bound"] for v in r["conditions"] if v["k"] == k and v.get("bound") is not None] for r in runs]
    bounds = [min(b) for b in bounded if b]
    levels = {m: sum(r["errors"][m][key][0] for r in runs) / len(runs) for m in runs[0]["errors"] if m != "transformer"}
    lassos = sorted((level, m) for m, level in levels.items() if m.startswith("lasso"))
    levels = {m: level for m, level in levels.items() if not m.startswith("lasso") or (level, m) == lassos[0]}
    if bounds:  # the tightest bound the criteria put on the transformer at k (mean over seeds), under the others
        same = [m for m, level in levels.items() if abs(level - np.mean(bounds)) < 1e-9]
        label = "criterion: below this" + "".join(f" (= {m})" for m in same)
        ax.axhline(np.mean(bounds), color="red", lw=2.5, alpha=0.5, label=label, zorder=1)
    for model, level in levels.items():
        best = " (the best Lasso)" if model.startswith("lasso") else ""
        ax.axhline(level, color=model_color(model), ls="--", lw=1.2, label=f"{model}{best} (after training)", zorder=3)
    trivial = runs[0]["trivial"][key]
    ax.axhline(trivial, color="k", ls=":", lw=1, label="predict 0")
    return max([trivial, *errs.flatten()])


# ---------------------------------------------------------------- compare: runs side by side


def loss_figure(curves: dict[str, tuple], path: Path) -> None:
    """loss.png: {group label: (steps, mean, min, max, runs)} of the training loss."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for label, (steps, mean, lo, hi, n_runs) in curves.items():
        (line,) = ax.plot(steps, mean, lw=1.2, label=f"{label} ({n_runs} run{'s' * (n_runs > 1)})")
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set(xlabel="step", ylabel="training loss", yscale="log", title="training loss (mean, min-max over seeds)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def compare_errors_figure(panels: list[dict], path: Path) -> None:
    """error.png: a panel per setting ({"title", "groups": {label: (runs, k) errors}, "setting":
    the first run's metrics of it}); the runs' groups solid in a palette of their own, the
    baselines dashed, each in its colour of every figure."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(9 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for color, (label, errors) in zip(RUN_COLORS * 4, panel["groups"].items()):
            k = np.arange(errors.shape[1])
            ax.plot(k, errors.mean(0), lw=1.8, label=label, color=color)
            ax.fill_between(k, errors.min(0), errors.max(0), color=color, alpha=0.2)
        s = panel["setting"]
        for name, m in s["models"].items():
            if name not in MODELS:
                ax.plot(m["mean"], "--", lw=1, label=name, color=model_color(name))
        ax.axhline(s["trivial"][0], color="k", ls=":", lw=1, label="predict 0")
        integer_ticks(ax.xaxis)
        ylim = (0, 1.25 * s["trivial"][0])
        ax.set(xlabel="in-context examples", ylabel="squared error / normaliser", ylim=ylim, title=panel["title"])
        ax.title.set_fontsize(9)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: no curve hidden
    save_figure(fig, path)


def compare_sweep_figure(key: str, values: dict, at_k: dict, k: int, titles: dict[str, str], path: Path) -> None:
    """sweep.png: error at k against the swept value, a panel per setting (titled by `titles`);
    groups without a number (null) are drawn as horizontal lines. The runs' own models (TRAINED)
    are solid and black, the baselines dashed in their fixed colours."""
    settings = list(dict.fromkeys(s for per_setting in at_k.values() for s in per_setting))
    fig, axes = pyplot().subplots(1, len(settings), figsize=(8 * len(settings), 4.5), squeeze=False)
    numeric = [label for label, v in values.items() if isinstance(v, (int, float))]
    xs = [values[label] for label in numeric]
    for ax, setting in zip(axes[0], settings):
        for model in dict.fromkeys(m for label in numeric for m in at_k[label].get(setting, {})):
            present = [label for label in numeric if model in at_k[label].get(setting, {})]
            x, runs = [values[label] for label in present], [at_k[label][setting][model] for label in present]
            if model == TRAINED:
                ax.plot(x, [np.mean(r) for r in runs], "o-", lw=2, label=model, color="k")
                ax.fill_between(x, [min(r) for r in runs], [max(r) for r in runs], color="k", alpha=0.15)
            else:
                ax.plot(x, [np.mean(r) for r in runs], ".--", lw=1, label=model, color=model_color(model))
        for label in values:
            if label not in numeric and TRAINED in at_k[label].get(setting, {}):
                level = np.mean(at_k[label][setting][TRAINED])
                ax.axhline(level, color="0.4", ls=":", lw=1.2, label=f"{TRAINED}, {label}")
        if xs and min(xs) > 0 and max(xs) >= 100 * min(xs):
            ax.set_xscale("log", base=2)
        ax.set(xlabel=key, ylabel=f"error at k = {k}", title=titles[setting])
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    save_figure(fig, path)


# ---------------------------------------------------------------- explore sweep=algorithms


def algorithms_figure(report: dict, path: Path) -> None:
    """algorithms.png: per setting, a heatmap of each layer's (and the output's) distance at k to
    the closest member of each family of algorithms (log10 of the mean squared difference over the
    error of predicting 0, shown from -3 to 1), the member named in its cell, the verdict marked
    (a ring: a tie with the runner-up), titled with the run."""
    settings = report["settings"]
    first = next(iter(settings.values()))
    families = list(first["output"]["families"])
    rows = [f"layer {e['layer']}" for e in first["layers"]] + ["output"]
    fig, axes = panel_grid(len(settings), max(7.0, 1.0 * len(families)), 1.2 + 0.35 * len(rows), cols=1)
    k = report["k"]
    for ax, (setting, s) in zip(axes, settings.items()):
        entries = [*s["layers"], s["output"]]
        # layers are not matched with predicting 0 (readable from anything): their cell stays empty
        grid = np.log10(
            [[max(e["families"].get(f, {"distance": np.nan})["distance"], 1e-12) for f in families] for e in entries]
        )
        grid = np.clip(np.nan_to_num(grid, posinf=1.0), -3, 1)  # 1e-3 .. 10: diverged GD is 10
        image = ax.imshow(grid, aspect="auto", cmap="viridis_r", vmin=-3, vmax=1)
        for row, e in enumerate(entries):
            for col, f in enumerate(families):
                member = e["families"].get(f, {"closest": f})["closest"]
                label = member[len(f) + 1 :] if member != f else ""
                label = f"{float(label):.3g}" if f == "ridge" else label
                ax.text(col, row, label, ha="center", va="center", fontsize=6, color="grey")
            ax.plot(
                families.index(next(f for f in families if e["families"][f]["closest"] == e["closest"])),
                row,
                "o",
                mfc="none" if e["tie"] else "white",
                mec="white",
                ms=9,
            )
        ax.set_xticks(range(len(families)), families, rotation=30, fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title(
            f"{setting}: log10 distance at k={k} to each family's closest (dot: verdict; ring: a tie)\n"
            f"run {report['run']} ({report['arch']}, {report.get('mask', 'causal')} mask)",
            fontsize=8,
        )
        ax.figure.colorbar(image, ax=ax, fraction=0.03)
    save_figure(fig, path)


def dynamics_figure(report: dict, path: Path) -> None:
    """Per run (a panel each), the output's distance at k to each family's closest member against
    the training step (log scale), the verdict at each step named along the top."""
    runs = report["runs"]
    fig, axes = pyplot().subplots(len(runs), 1, figsize=(7.5, 3.6 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs):
        points = run["points"]
        steps = [p["step"] for p in points]
        for i, f in enumerate(points[0]["families"]):
            distances = [max(p["families"][f]["distance"], 1e-6) for p in points]
            ax.plot(steps, distances, "o-", ms=3, color=f"C{i}", label=f)
        for p in points:
            ax.annotate(
                p["verdict"], (p["step"], 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=6, va="bottom"
            )
        ax.set(yscale="log", ylabel=f"distance at k={points[0]['k']}\n(over predicting 0)")
        ax.set_title(run["run"], fontsize=8, loc="left", pad=70)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("training step")
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("which algorithm the output matches along training", fontsize=9)
    save_figure(fig, path)


# ---------------------------------------------------------------- examples/real_data.py


def real_tables_figure(report: dict, path: Path, floor: float = -0.5) -> None:
    """R² per table (rows) of every model (its own colour and marker), a panel per context length;
    R² below `floor` is drawn at the floor, as an open marker."""
    results = report["results"]
    tables = list(results)
    contexts = list(results[tables[0]])
    names = list(results[tables[0]][contexts[0]])
    fig, axes = panel_grid(len(contexts), 4.2, 0.32 * len(tables) + 1.4, cols=3, sharey=True)
    markers = "oDs^vP*X"
    for ax, context in zip(axes, contexts):
        for i, name in enumerate(names):
            r2 = np.array([results[t][context][name]["mean"] for t in tables])
            rows = np.arange(len(tables)) + (i - (len(names) - 1) / 2) * 0.12
            color = f"C{i}"
            ax.scatter(
                np.maximum(r2, floor),
                rows,
                s=22,
                marker=markers[i % len(markers)],
                label=name,
                facecolors=np.where(r2 < floor, "none", color),
                edgecolors=color,
                linewidths=1,
            )
        ax.axvline(0, color="grey", lw=0.6)
        ax.set(
            xlim=(floor - 0.05, 1.0),
            xlabel="R² on the held-out rows (mean over splits)",
            title=f"{context} context rows, {len(report['seeds'])} splits",
        )
        ax.set_yticks(range(len(tables)), tables)
        ax.invert_yaxis() if ax is axes[0] else None
        ax.grid(axis="x", alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"ICLRegressor ({report['model']}) and scikit-learn's regressors on real tables", fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.03 * math.ceil(len(names) / 3), 1, 1))
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
