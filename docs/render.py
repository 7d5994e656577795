"""Render the tables of results in README.md and docs/ from the committed JSON in docs/results/.

    python docs/render.py           # rewrite every table block in place
    python docs/render.py --check   # exit 1, naming each block that differs from its rendering

A block in a markdown file is

    <!-- table: results/NAME.json [VIEW] -->
    (the rendered table: never edit it by hand)
    <!-- end table -->

with the path relative to docs/ (a glob renders several JSONs of one kind side by side). Each
JSON declares what it is in its `kind`, written by the command that wrote it, and renders by it
(RENDERERS); one without a `kind` is refused. A claims.json of `python -m minicl.reproduce` renders as the
claims table (VIEW `summary`: a row per claim; `seeds`: a row per claim and seed; a glob of them
with VIEW `status`: each claim's size beside the paper's, verdict and margins), an explore
sweep's JSON as its errors at every swept value, sweep=algorithms' JSON as each layer's verdict
and closest GD, Newton and ridge members with their bands (VIEW `path`: the counts per layer), a
JSON of `python -m minicl.mechanism` by its `kind` (constructions, masks, depth, dynamics), a
mixture's metrics.json as each predictor's error per component (VIEW `components`; a glob of them
with VIEW `selection`: the algorithm-selection criterion per seed), examples/real_data.py's JSON
as R² per table (VIEW `contexts`: per context length; `verdicts`: the criterion per regressor; a
glob of them with VIEW `verdicts`: the criterion per trained model), a shipped model's record as
its errors at k = d/2, d, 2d, a benchmark run's JSON as its ratios, and `../conf/experiment
schedules` as the experiment configs' schedules. Each table names the command and commit that
wrote its JSON: results are never written by hand.
"""

import json
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
BLOCK = re.compile(r"(<!-- table: (\S+)(?: (\w+))? -->\n)(.*?)(<!-- end table -->)", re.S)
COMPARATORS = {  # the columns of the claims table: the comparators each criterion names
    "linear": ["least_squares"],
    "sparse_linear": ["least_squares", "best Lasso", "bayes_sparse"],
    "relu_2nn": ["gd_2nn", "least_squares"],
    "decision_tree": ["xgboost", "decision_tree_4", "decision_tree"],
}
LETTERS = {"linear": "(a)", "sparse_linear": "(b)", "relu_2nn": "(c)", "decision_tree": "(d)"}


def markdown(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]) + "\n"


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def made_by(data: dict) -> str:
    """The command that wrote a results JSON, with minicl's commit (and the machine, when recorded)."""
    machine = data.get("machine")
    where = f" on {machine['cpu']} ({machine['kernels']} kernels)" if machine else ""
    return f"`{data['command']}`, commit {str(data['commit'])[:7]}{where}"


def made_by_all(datas: list[dict]) -> str:
    """The commands that wrote several results JSONs, with their commits (once, when they agree)."""
    commits = sorted({str(d["commit"])[:7] for d in datas})
    if len(commits) > 1:
        return "; ".join(made_by(d | {"machine": None}) for d in datas)
    return "; ".join(f"`{d['command']}`" for d in datas) + f" (commit {commits[0]})"


def error_at(run: dict, model: str, k: str) -> float:
    if model == "best Lasso":
        return min(e[k][0] for m, e in run["errors"].items() if m.startswith("lasso"))
    return run["errors"][model][k][0]


def margin(run: dict) -> tuple[float, float, float]:
    """A claim run's margin to its tightest criterion: bound - the transformer's error, with the
    margins at the ends of the error's 5-95% bootstrap band (hi first: the band's low margin)."""
    return min(
        (c["bound"] - e[0], c["bound"] - e[2], c["bound"] - e[1])
        for c in run["conditions"]
        if c["bound"] is not None  # a condition on a comparator alone
        for e in [run["errors"]["transformer"][str(c["k"])]]
    )


def claims_table(claims: list[dict], view: str) -> str:
    """reproduce's claims.json as a table: each claim's errors at the k its criteria read, and the
    margin to its tightest criterion (VIEW `seeds`: with the error's and the margin's bands)."""
    rows = []
    for c in claims:
        name, k = c["claim"], str(c["ks"][-1])
        for r in c["runs"] if view == "seeds" else [None]:
            shown = [r] if r else c["runs"]
            transformer = " / ".join(f"{x['errors']['transformer'][k][0]:.3f}" for x in shown)
            comparators = "; ".join(
                f"{m} " + " / ".join(f"{error_at(x, m, k):.3f}" for x in shown)
                for m in COMPARATORS[name]
                if m == "best Lasso" or m in shown[0]["errors"]
            )
            if "ratio" in shown[0]:  # reported beside the criterion: the transformer's error over the comparator's
                comparators += f"; transformer / {shown[0]['ratio']['to']} " + " / ".join(
                    f"{x['ratio']['value']:.2f}" for x in shown
                )
            margins = " / ".join("{:+.3f} [{:+.3f}, {:+.3f}]".format(*margin(x)) for x in shown)
            if r:
                band = r["errors"]["transformer"][k]
                transformer += f" [{band[1]:.3f}, {band[2]:.3f}]"
            verdict = ("holds" if r["holds"] else "does not hold") if r else f"holds on {c['holds_on']} of {len(shown)}"
            first = f"{LETTERS[name]} {name}, d = {c['n_dims']}" if r is None or r is c["runs"][0] else ""
            seed = r["seed"] if r else ", ".join(map(str, c["seeds"]))
            minutes = " / ".join(f"{x['train_seconds'] / 60:.0f}" for x in shown)
            rows.append([first, seed, k, transformer, comparators, margins, f"**{verdict}**", minutes])
    columns = ["claim", "seed" if view == "seeds" else "seeds", "k", "transformer", "comparators", "margin"]
    machines = sorted({r.get("machine", "") for c in claims for r in c["runs"]} - {""})
    source = f"\nMachine: {'; '.join(machines)}.\n" if machines else ""
    return markdown([*columns, "verdict", "train min"], rows) + source


def size(name: str, scale: str) -> str:
    """A claim's problem and model at `scale`, from its config (what reproduce trains)."""
    from minicl.reproduce import claim_config

    cfg = claim_config(name, scale, [])
    task, model = cfg.task, cfg.model
    dims = f"{task.sparsity} of {task.n_dims} dims" if "sparsity" in task else f"{task.n_dims} dims"
    depth = f", depth {task.depth}" if "depth" in task else ""
    return (
        f"{dims}{depth}, {task.curriculum.points.end} points; {model.n_layer} layers of width {model.n_embd}, "
        f"{cfg.trainer.steps:,} steps"
    )


def status_table(results: list[dict]) -> str:
    """Several claims.json (a glob): per claim its size at CPU scale beside the paper's, its
    verdict over the seeds, the margin to its tightest criterion per seed, with the band."""
    rows = []
    for data in results:
        for c in data["claims"]:
            ratios = [r["ratio"] for r in c["runs"] if "ratio" in r]
            beside = "".join(f"; transformer / {r['to']}: " for r in ratios[:1]) + " / ".join(
                f"{r['value']:.2f}" for r in ratios
            )
            rows.append(
                [
                    f"{LETTERS[c['claim']]} {c['claim']}",
                    size(c["claim"], "cpu"),
                    size(c["claim"], "paper"),
                    f"**holds on {c['holds_on']} of {len(c['runs'])}** (seed {', '.join(map(str, c['seeds']))})",
                    " / ".join("{:+.3f} [{:+.3f}, {:+.3f}]".format(*margin(r)) for r in c["runs"]) + beside,
                ]
            )
    rows.sort(key=lambda row: row[0])
    columns = ["claim", "CPU size (trained)", "the paper's size", "verdict", "margin [band] per seed"]
    return markdown(columns, rows) + (
        "\nMargin: the tightest criterion's bound less the transformer's error (negative: the criterion "
        "fails); in brackets, the same at the ends of the error's 5-95% bootstrap band. Sizes from "
        "`experiment=claim_<task>` and the task defaults (`scale=paper`); verdicts from " + made_by_all(results) + ".\n"
    )


def experiment(path: Path):
    """An experiment config's own keys over those of the experiments its `defaults` name (other
    groups' defaults, `override /model: ...`, set no trainer key)."""
    from omegaconf import OmegaConf

    own = OmegaConf.load(path)
    names = [d for d in own.pop("defaults", []) if isinstance(d, str) and d != "_self_"]
    parents = [experiment(path.with_name(f"{name}.yaml")) for name in names]
    return OmegaConf.merge(*parents, own)


def schedules_table(folder: Path) -> str:
    """The experiment configs (conf/experiment/*.yaml): the steps, rate and schedule each sets."""
    keys = ["steps", "lr", "schedule", "warmup_steps", "decay_steps"]
    rows = []
    for path in sorted(folder.glob("*.yaml")):
        trainer = experiment(path).get("trainer") or {}
        rows.append(
            [
                f"`experiment={path.stem}`",
                *(f"{trainer[key]:,}" if isinstance(trainer.get(key), int) else trainer.get(key, "") for key in keys),
            ]
        )
    return markdown(["config", *keys], rows) + (
        "\nFrom `conf/experiment/*.yaml`; blank: the default (the paper's constant rate, no warm-up).\n"
    )


def sweep_table(out: dict) -> str:
    """An explore sweep's JSON: each model's error / signal at k for every swept value."""
    models = list(out["results"][0]["models"])
    rows = [
        [
            f"{r['value']:g}",
            *(
                f"{r['models'][m]['mean'][int(r['value']) if out['sweep'] == 'length' else out['k']]:.3f}"
                for m in models
            ),
        ]
        for r in out["results"]
    ]
    at = "k = the value" if out["sweep"] == "length" else f"k = {out['k']}"
    return markdown([out["sweep"], *models], rows) + (
        f"\nError / signal at {at}, {out['n_prompts']} prompts per value: {made_by(out)}.\n"
    )


def shipped_table(record: dict) -> str:
    """A shipped model's record (minicl/shipped/<name>.json): every model's error at k = d/2, d, 2d."""
    d, n, ev = record["n_dims"], record["n_points"], record["evaluation"]
    ks = sorted({max(1, d // 2), d, min(2 * d, n - 1)})
    rows = [
        [m, *(f"{e['mean'][k]:.3f} [{e['lo'][k]:.3f}, {e['hi'][k]:.3f}]" for k in ks)] for m, e in ev["models"].items()
    ]
    machine = record["machine"]
    return markdown(["model", *(f"k = {k}" for k in ks)], rows) + (
        f"\n{ev['n_prompts']} prompts of the {ev['setting']} setting, 5-95% bootstrap bands; "
        f"trained by `{record['command']}` in {record['train_seconds'] / 60:.1f} minutes on {machine['cpu']} "
        f"({machine['kernels']} kernels), torch {machine['torch']}.\n"
    )


def benchmark_table(run: dict) -> str:
    """A pytest-benchmark JSON of `pytest benchmarks/ --benchmark`: each check's minicl and reference times,
    and their ratio."""

    def cell(info: dict, key: str) -> str:
        return f"{info[key]:.4g} {info['unit']}" if info.get(key) is not None else "-"

    rows = [
        [e["name"], cell(e, "minicl"), cell(e, "reference"), f"{e['ratio']:.2f}x" if e.get("ratio") else "-"]
        for e in (b["extra_info"] for b in run["benchmarks"])
        if "minicl" in e
    ]
    info = run["machine_info"]
    machine = f"{info.get('cpu_kind', info['cpu']['brand_raw'])}, {info['cpu']['count']} cores"
    return markdown(["benchmark", "minicl", "reference", "reference / minicl"], rows) + (
        f"\n{machine}; commit {run['commit_info'].get('id', '?')[:7]}, {run['datetime'][:10]}.\n"
    )


def member(entry: dict, fam: str) -> str:
    """A family's closest member at k with its bootstrap band (and a mark where it is the grid's edge)."""
    e = entry["families"].get(fam)
    if e is None:
        return "-"
    value, low, high = (n[len(fam) + 1 :] for n in (e["closest"], *e["band"]))
    if fam == "ridge":
        value, low, high = (f"{float(v):.3g}" for v in (value, low, high))
    spread = "" if low == high == value else f" [{low}, {high}]"
    return f"{value}{spread} ({e['distance']:.3f}){' edge' * e['at_edge']}"


def verdict(entry: dict) -> str:
    """The verdict at k: the closest algorithm with its distance, or a tie naming both, or none."""
    d = entry["distance"]
    if entry["verdict"] == "none":
        return f"none ({entry['closest']} {d[entry['closest']]:.2f})"
    if entry["tie"]:
        return (
            f"tie: {entry['closest']} / {entry['runner_up']} ({d[entry['closest']]:.3f} / {d[entry['runner_up']]:.3f})"
        )
    return f"**{entry['closest']}** ({d[entry['closest']]:.3f}){' edge' * entry['at_edge']}"


def algorithms_table(report: dict) -> str:
    """explore sweep=algorithms' JSON: per setting and layer, the y readout's error at k, the verdict,
    and the closest GD step count, Newton iteration and ridge lam, each with its band."""
    k, rows = report["k"], []
    for setting, s in report["settings"].items():
        for entry in [*s["layers"], {**s["output"], "layer": "output"}]:
            rows.append(
                [
                    setting if entry["layer"] == 0 else "",
                    entry["layer"],
                    f"{entry['error'][k]:.3f}",
                    verdict(entry),
                    f"{entry['error_cosine'][entry['closest']]:.3f}" if entry["verdict"] != "none" else "-",
                    *(member(entry, fam) if entry["verdict"] != "none" else "-" for fam in ("gd", "newton", "ridge")),
                ]
            )
    columns = ["setting", "layer", "error", "verdict", "error cosine", "GD steps", "Newton iterations", "ridge lam"]
    return markdown(columns, rows) + (
        f"\nAt k = {k} of {report['n_prompts']} prompts; {report['arch']}, {report['n_layer']} layers, "
        f"{report.get('mask', 'causal')} mask, d = {report['n_dims']}"
        f"{', trained with kappa = ' + format(report['kappa'], 'g') if report.get('kappa', 1) != 1 else ''}. "
        "Error: a readout of y, over the error of predicting 0. Layers: the share of each algorithm's "
        "prediction a readout fitted to it cannot recover; output: the mean squared difference over the "
        "error of predicting 0. Error cosine: Fu et al.'s similarity of errors with the closest algorithm (the "
        "cosine of the residual vectors). [a, b]: the 5-95% bootstrap range of the closest member; edge: the grid's "
        f"end; -: no algorithm's prediction readable (none). {made_by(report)}.\n"
    )


def path_table(report: dict, setting: str = "standard") -> str:
    """explore sweep=algorithms' JSON (VIEW `path`): per layer, the matching GD step count and Newton
    iteration on one setting, with their bands, as a row each."""
    layers = report["settings"][setting]["layers"]

    def cell(entry: dict, fam: str) -> str:
        if entry["verdict"] == "none":
            return "-"
        return member(entry, fam).split(" (")[0] + (" edge" if entry["families"][fam]["at_edge"] else "")

    rows = [[name, *(cell(e, fam) for e in layers)] for name, fam in (("GD steps", "gd"), ("Newton", "newton"))]
    rows.append(["verdict", *(e["verdict"].replace("tie: ", "tie ") for e in layers)])
    return markdown(["", *(f"layer {e['layer']}" for e in layers)], rows) + (
        f"\nAt k = {report['k']}, the {setting} setting: {made_by(report)}.\n"
    )


def constructions_table(data: dict) -> str:
    """mechanism constructions: the causal construction's distance to its fixed point and to Ding et
    al.'s with depth, and the prefix construction against t GD steps."""
    rows = [
        [c["layers"], f"{c['to_fixed_point']:.2e}", f"{c['to_ding']:.3f}", f"{c['error']:.4f}"] for c in data["causal"]
    ]
    e = data["error"]
    prefix = "; ".join(
        f"{p['layers']} layers: {p['max_relative_difference']:.0e} (error {p['error']:.3f})" for p in data["prefix"]
    )
    return markdown(["causal layers", "to its fixed point", "to Ding's online GD", "error"], rows) + (
        f"\nd = {data['n_dims']}, k = {data['k']}, {data['n_prompts']} prompts, float64, causal step "
        f"{data['causal_lr']:g}; distances at k over the error of predicting 0. Error at k of the fixed point "
        f"(`online_gd`, shrink) {e['fixed_point']:.4f}, of Ding's (`online_gd`, lr 1) {e['ding_online_gd']:.4f}, "
        f"of least squares {e['least_squares']:.1e}; the squared distance to the fixed point shrinks by "
        f"{data['rate_per_layer']:.4f} a layer at the end. Prefix construction against t GD steps (step "
        f"{data['prefix'][0]['lr']:g}), largest relative difference over every prefix: {prefix}. "
        f"{made_by(data)}.\n"
    )


def band_text(low: float, high: float) -> str:
    return f"[{low:+.3f}, {high:+.3f}]"


def masks_table(data: dict) -> str:
    """mechanism masks: per architecture, depth and seed, the error at k under each mask beside t-step
    GD's, with paired bands; then each verdict as measured."""
    runs = {(r["arch"], r["n_layer"], r["seed"], r["mask"]): r for r in data["runs"]}
    rows = []
    for p in data["pairs"]:
        causal, prefix = (runs[(p["arch"], p["n_layer"], p["seed"], m)] for m in ("causal", "prefix"))
        rows.append(
            [
                p["arch"],
                p["n_layer"],
                p["seed"],
                f"{causal['error']:.4f}",
                f"{prefix['error']:.4f}",
                f"{prefix['gd_error']:.4f} ({prefix['gd_lr']:.3g})",
                band_text(*prefix["minus_gd_band"]),
                f"{p['prefix_minus_causal']:+.4f} {band_text(*p['band'])}",
            ]
        )
    columns = ["arch", "layers", "seed", "causal", "prefix", "t-step GD (lr)", "prefix - GD", "prefix - causal"]
    lines = [
        f"{v['claim']}: on {v['held_on']} of {v['seeds']} seeds, "
        + (f"**{'holds' if v['holds'] else 'does not hold'}**" if v["judged"] else "not judged (fewer than 3 seeds)")
        for v in data["verdicts"]
    ]
    k = data["runs"][0]["k"]
    return markdown(columns, rows) + (
        f"\nError at k = {k} over the error of predicting 0, {data['n_prompts']} prompts; [a, b]: 5-95% paired "
        "bootstrap bands over prompts. " + "; ".join(lines) + f". {made_by(data)}.\n"
    )


def depth_table(data: dict) -> str:
    """mechanism depth: per report and setting, the matching GD and Newton counts per layer with their
    bands, and each of Fu et al.'s claims as measured."""
    rows, lines = [], []
    for v in data["verdicts"]:
        if "layers" not in v:
            lines.append(
                f"`{v['run']}`, {v['setting']}: GD's count doubles on {v['gd_doubles_on']} and Newton's holds "
                f"(within 2) on {v['newton_holds_on']} of {v['layers_compared']} layers: "
                f"**{'holds' if v['holds'] else 'does not hold'}**"
            )
            continue
        for fam in ("gd", "newton"):
            cells = []
            for c in v["layers"]:
                low, high = c[fam]["band"]
                spread = "" if low == high == c[fam]["count"] else f" [{low}, {high}]"
                cells.append(
                    f"{c[fam]['count']}{spread}{' edge' * c[fam]['at_edge']}" if c["verdict"] != "none" else "-"
                )
            rows.append([f"`{v['run']}`" if fam == "gd" else "", v["setting"] if fam == "gd" else "", fam, *cells])
        growth = v["gd_growth_per_layer"]
        lines.append(
            f"`{v['run']}`, {v['setting']}: GD's count x{growth:.2f} a layer, Newton's steps "
            f"{v['newton_steps_per_layer']}: **{'holds' if v['holds'] else 'does not hold'}**"
            if growth is not None
            else f"`{v['run']}`, {v['setting']}: fewer than two layers read: not judged"
        )
    n_layers = max(len(v["layers"]) for v in data["verdicts"] if "layers" in v)
    columns = ["run", "setting", "count", *(f"layer {i + 1}" for i in range(n_layers))]
    return markdown(columns, rows) + "\n" + "; ".join(lines) + f". {made_by(data)}.\n"


def dynamics_table(data: dict) -> str:
    """mechanism dynamics: each run's error and verdict at every saved step side by side, then per
    run the first GD-like and least-squares-like steps and the order the command judged."""
    runs = data["runs"]
    steps = sorted({p["step"] for r in runs for p in r["points"]})
    at = [{p["step"]: p for p in r["points"]} for r in runs]
    rows = [
        [step, *(f"{a[step]['error']:.3f}, {a[step]['verdict']}" if step in a else "-" for a in at)] for step in steps
    ]

    def since(step: int | None, what: str) -> str:
        return f"{what} from step {step}" if step else f"never {what}"

    lines = [
        f"`{r['run']}`: {since(r['first_gd'], 'GD-like')}, {since(r['first_least_squares'], 'least-squares-like')}: "
        f"GD-like before least-squares-like **{'holds' if r['gd_before_least_squares'] else 'does not hold'}**"
        for r in runs
    ]
    held, total = data["holds_on"]
    return markdown(["step", *(f"`{r['run']}` error, verdict" for r in runs)], rows) + (
        f"\nAt k = {runs[0]['points'][0]['k']}, {data['n_prompts']} prompts of the standard setting. "
        + "; ".join(lines)
        + f". Holds on {held} of {total} runs. {made_by(data)}.\n"
    )


KINDS = {"constructions": constructions_table, "masks": masks_table, "depth": depth_table, "dynamics": dynamics_table}


def component_errors(metrics: dict, k: int) -> dict[str, list[float]]:
    """A mixture's metrics.json: each predictor's error at k on each component alone."""
    parts = [s for s in metrics["settings"] if s.startswith("component_")]
    models = metrics["settings"][parts[0]]["models"]
    return {m: [metrics["settings"][s]["models"][m]["mean"][k] for s in parts] for m in models}


def components_table(runs: dict[str, dict]) -> str:
    """Mixture runs' metrics.json (one, or a glob: their values side by side, a / b / c): every
    predictor's error at k = 2d on each component alone (the model first, then the Bayes model
    average where there is one)."""
    first_run = next(iter(runs.values()))
    k = min(2 * first_run["n_dims"], first_run["n_points"] - 1)
    errors = [component_errors(m, k) for m in runs.values()]
    names = [m for m in ("transformer", "bayes_noise_mixture") if m in errors[0]]
    names += [m for m in errors[0] if m not in names]
    n_parts = len(errors[0]["transformer"])
    rows = [[m, *(" / ".join(f"{e[m][i]:.3f}" for e in errors) for i in range(n_parts))] for m in names]
    runs_named = f" ({' / '.join(name.rsplit('-', 1)[-1] for name in runs)})" if len(runs) > 1 else ""
    columns = ["predictor", *(f"component {i}{runs_named}" for i in range(n_parts))]
    return markdown(columns, rows) + (
        f"\nError at k = {k} on the noise-free query value over d, {first_run['n_prompts']} prompts per "
        f"component, evaluation seed {first_run['seed']}: " + made_by_all(list(runs.values())) + ".\n"
    )


def lam_text(e: dict) -> str:
    """An effective lam with its band: 1.3 [1.1, 1.6], starred at the grid's edge."""
    return f"{e['lam']:.3g} [{e['band'][0]:.3g}, {e['band'][1]:.3g}]" + "*" * e["at_edge"]


def selection_table(runs: dict[str, dict]) -> str:
    """Noise-mixture runs' metrics.json (a glob, by file name): per run, the model's and the Bayes
    model average's error at k = 2d on each component, the closest fixed ridge and those as good on
    every component, each one's effective lam per component with its ratio, and the two parts of
    the verdict minicl.selection computed (this only shows them)."""
    rows = []
    for name, m in runs.items():
        v, k = m["selection"], m["selection"]["k"]
        errors = {
            label: [m["settings"][c]["models"][label]["mean"][k] for c in v["components"]]
            for label in (v["model"], "bayes_noise_mixture", v["closest_fixed"])
        }
        lams = {label: [m["settings"][c]["effective_lam"][label] for c in v["components"]] for label in errors}
        ratios = v["lam_ratio"]
        rows.append(
            [
                name,
                " / ".join(f"{x:.3f}" for x in errors[v["model"]]),
                " / ".join(f"{x:.3f}" for x in errors["bayes_noise_mixture"]),
                f"{v['closest_fixed']} ({' / '.join(f'{x:.3f}' for x in errors[v['closest_fixed']])})",
                ", ".join(v["fixed_as_good"]) or "none",
                f"**{'holds' if v['criterion_38'] else 'does not hold'}**",
                " / ".join(lam_text(e) for e in lams[v["model"]]),
                f"{ratios['model']['ratio']:.3g} [{ratios['model']['band'][0]:.3g}, {ratios['model']['band'][1]:.3g}]",
                " / ".join(lam_text(e) for e in lams["bayes_noise_mixture"]),
                f"**{'holds' if v['ratio_criterion'] else 'does not hold'}**",
            ]
        )
    columns = [
        "run",
        "model",
        "Bayes average",
        "closest fixed ridge",
        "fixed ridges as good on both",
        "criterion (errors)",
        "model's effective lam",
        "ratio",
        "Bayes average's effective lam",
        "criterion (ratio >= 10, bands apart)",
    ]
    return markdown(columns, rows) + (
        "\nErrors at k = 2d on the cleanest / the noisiest component; the closest fixed ridge is the one whose "
        "worse ratio to the model is least; effective lam: the ridge lam (101 on a log grid from 1e-3 to 100) "
        "closest to the predictions, with its 5-95% bootstrap range over prompts (* at the grid's edge): "
        + made_by_all(list(runs.values()))
        + ".\n"
    )


def verdicts_table(report: dict) -> str:
    """examples/real_data.py's JSON (VIEW `verdicts`): the criterion, regressor by regressor."""
    rows = [
        [
            v["model"],
            f"{v['mean_r2']:.3f}",
            f"{v['ridge_mean_r2']:.3f}",
            f"{v['mean_gap']:+.3f}",
            f"{v['worst_table']} ({v['worst_gap']:+.3f})",
            ", ".join(v["tables_below_context_mean"]) or "none",
        ]
        for v in report["verdicts"]
    ]
    columns = ["model", "mean R²", "RidgeCV's", "difference", "worst table", "below the context mean"]
    return markdown(columns, rows) + (
        f"\nAt 40 context rows on splits {report['seeds'][0]} to {report['seeds'][-1]}: {made_by(report)}.\n"
    )


def seeds_verdicts_table(reports: list[dict]) -> str:
    """A glob of examples/real_data.py's JSONs (VIEW `verdicts`), one per trained model: each one's
    criterion, and the spread of the worst table's shortfall."""
    rows = [
        [
            f"`{r['model']}`",
            f"{v['mean_r2']:.3f}",
            f"{v['ridge_mean_r2']:.3f}",
            f"{v['mean_gap']:+.3f}",
            f"{v['worst_table']} ({v['worst_gap']:+.3f})",
            ", ".join(v["tables_below_context_mean"]) or "none",
            f"**{'holds' if v['holds'] else 'does not hold'}**",
        ]
        for r in reports
        for v in r["verdicts"]
    ]
    columns = ["model", "mean R²", "RidgeCV's", "difference", "worst table", "below the context mean", "criterion"]
    gaps = [v["worst_gap"] for r in reports for v in r["verdicts"]]
    return markdown(columns, rows) + (
        f"\nAt 40 context rows on splits {reports[0]['seeds'][0]} to {reports[0]['seeds'][-1]}; the worst table's "
        f"difference ranges from {min(gaps):+.3f} to {max(gaps):+.3f}: {made_by_all(reports)}.\n"
    )


def real_tables_table(report: dict, view: str | None) -> str:
    """examples/real_data.py's JSON: R² per table and model at 40 context rows (mean over the splits),
    their mean and the criterion's verdict; VIEW `contexts`: the mean over the tables at each context."""
    results, tables = report["results"], report["tables"]
    first = next(iter(results.values()))
    models = list(next(iter(first.values())))
    if view == "contexts":
        rows = [
            [f"{c} rows", *(f"{mean([mean(r[c][m]['r2']) for r in results.values()]):.3f}" for m in models)]
            for c in first
        ]
        return markdown(["context", *models], rows) + f"\nMean R² over {len(results)} tables: {made_by(report)}.\n"
    if view == "verdicts":
        return verdicts_table(report)
    at = str(report["criterion"]["context"])
    rows = [
        [t, tables[t]["features"], tables[t]["rows"], *(f"{mean(results[t][at][m]['r2']):.3f}" for m in models)]
        for t in results
    ]
    means = [f"**{mean([mean(results[t][at][m]['r2']) for t in results]):.3f}**" for m in models]
    rows.append(["**mean**", "", "", *means])
    lines = [
        f"{v['model']}: {v['mean_gap']:+.3f} against RidgeCV on the mean, worst table {v['worst_table']} "
        f"({v['worst_gap']:+.3f}), below the context mean on {', '.join(v['tables_below_context_mean']) or 'none'}: "
        f"criterion **{'holds' if v['holds'] else 'does not hold'}**"
        for v in report.get("verdicts", [])
    ]
    seconds = {m: sum(r[at][m]["seconds"] for r in results.values()) / len(results) for m in models}
    timing = ", ".join(f"{m} {1000 * sec:.0f} ms" for m, sec in seconds.items())
    return markdown(["table", "features", "rows", *models], rows) + (
        f"\nR² on the rows outside a {at}-row context, mean over {len(report['seeds'])} random splits. "
        + "; ".join(lines)
        + f". Fit and predict per split, mean over the tables: {timing}; a 40-row context and 1000 rows "
        f"predicted: {report['predict_1000_rows_seconds']:.3f} s. {made_by(report)}.\n"
    )


def claims_view(named: dict[str, dict], view: str | None) -> str:
    """reproduce's claims.json (VIEW summary or seeds), or a glob of them (VIEW status)."""
    if view == "status":
        return status_table(list(named.values()))
    [data] = named.values()
    note = f" The JSON was {data['note']}." if "note" in data else ""
    return claims_table(data["claims"], view or "summary") + f"\nWritten by {made_by(data)}.{note}\n"


def real_tables_view(named: dict[str, dict], view: str | None) -> str:
    """examples/real_data.py's JSON, or a glob of them (VIEW verdicts: one row per trained model)."""
    if len(named) > 1:
        return seeds_verdicts_table(list(named.values()))
    return real_tables_table(next(iter(named.values())), view)


def metrics_view(named: dict[str, dict], view: str | None) -> str:
    """evaluate's metrics.json of mixture runs (one or a glob): VIEW components or selection."""
    if view not in ("components", "selection"):
        raise ValueError(f"a mixture's metrics.json renders with VIEW components or selection, not {view!r}")
    return (components_table if view == "components" else selection_table)(named)


def one(table):
    """A renderer of one JSON that takes no VIEW, for the table of renderers."""

    def render_one(named: dict[str, dict], view: str | None) -> str:
        if len(named) != 1:
            raise ValueError(f"{table.__name__} renders one JSON, not a glob of {len(named)}")
        return table(next(iter(named.values())))

    return render_one


RENDERERS = {  # a results JSON's `kind` (the commands write it): how it renders
    "claims": claims_view,
    "algorithms": lambda named, view: (path_table if view == "path" else algorithms_table)(*named.values()),
    "sweep": one(sweep_table),
    "real_tables": real_tables_view,
    "benchmark": one(benchmark_table),
    "metrics": metrics_view,
    "shipped": one(shipped_table),
    **{kind: one(table) for kind, table in KINDS.items()},
}


def render(path: str, view: str | None) -> str:
    """The table of docs/PATH (a JSON, or a glob of JSONs of one kind) in VIEW, by the `kind` the
    command that wrote it declared; a JSON without one is refused (results are never written by hand)."""
    if view == "schedules":
        return schedules_table(DOCS / path)
    found = sorted(DOCS.glob(path)) if "*" in path else [DOCS / path]
    if not found:
        raise FileNotFoundError(f"no file matches docs/{path}")
    named = {p.stem: json.loads(p.read_text()) for p in found}
    kinds = {data.get("kind") for data in named.values()}
    if None in kinds:
        raise ValueError(f"docs/{path}: a JSON without a `kind`; the commands write what each results JSON is")
    if len(kinds) > 1 or not kinds <= set(RENDERERS):
        raise ValueError(f"docs/{path}: kinds {sorted(kinds)}; one of {sorted(RENDERERS)} renders")
    return RENDERERS[kinds.pop()](named, view)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def rendered(text: str) -> str:
    return BLOCK.sub(lambda m: m[1] + render(m[2], m[3]) + m[5], text)


def stale() -> list[str]:
    """The blocks whose committed text differs from their rendering, as 'FILE: results/NAME.json'."""
    out = []
    for page in pages():
        text = page.read_text()
        for m in BLOCK.finditer(text):
            if m[4] != render(m[2], m[3]):
                out.append(f"{page.relative_to(ROOT)}: {m[2]}")
    return out


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        differ = stale()
        for block in differ:
            print(f"stale table: {block} (run python docs/render.py)")
        return 1 if differ else 0
    for page in pages():
        text = page.read_text()
        if rendered(text) != text:
            page.write_text(rendered(text))
            print(f"rendered the tables of {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
