"""The mechanism experiments of docs/algorithms.md, each a command that writes a results JSON (with
its `kind`) and computes its verdicts by criteria fixed here, before the runs they judge:

    python -m minicl.mechanism constructions --out FILE      # a: the hand-built models, no training
    python -m minicl.mechanism masks RUN... --out FILE       # b, c: causal against prefix mask, per seed
    python -m minicl.mechanism depth JSON... --out FILE      # d: GD and Newton counts per layer (Fu et al.)
    python -m minicl.mechanism dynamics RUN... --out FILE    # e: the output's match along training

`masks` reads trained runs; `depth` reads `sweep=algorithms` JSONs; `dynamics` probes each run's
snapshots (model_<step>.pt) and its final state, and judges the order GD-like, then least-squares-like.
"""

import argparse
import json
import math
import re
import sys
from pathlib import Path

import torch

from minicl.algorithm_probe import (
    GD_STEPS,
    algorithm_predictions,
    band,
    best_gd_lrs,
    family,
    probe_setting,
    split,
)
from minicl.algorithms import gd_lsa
from minicl.baselines import build_baseline
from minicl.common import bootstrap_counts, write_json
from minicl.config import task_from_config
from minicl.plots import dynamics_figure
from minicl.rundir import model_from_state, read_prompt_run, read_run, stamp
from minicl.settings import setting_prompts

# ---------------------------------------------------------------- a: the constructions, no training


def constructions(n_dims: int = 10, k: int = 10, n_prompts: int = 1280, seed: int = 0, causal_lr: float = 0.04) -> dict:
    """The hand-built models on standard prompts (float64): the prefix construction against t GD steps
    (t = 1..4, the largest difference over every prefix, relative to max(1, |GD's prediction|)), and
    the causal construction at growing depth
    against its fixed point (online_gd with shrink) and Ding et al.'s (online_gd), with the errors at k
    of each. `causal_lr` is stable on these prompts (lr ||x_j||^2 < 2 on the first pair of each)."""
    from minicl.tasks import build_task  # deferred: only this experiment draws its own prompts

    task = build_task("linear", n_dims=n_dims)
    prompts = setting_prompts("standard", task, n_prompts, k + 1, seed)
    xs, ys = prompts.xs.double(), prompts.ys.double()

    def error(preds: torch.Tensor) -> float:
        return (((preds[:, k] - ys[:, k]) ** 2).mean() / task.normaliser).item()

    with torch.no_grad():
        prefix = [prefix_against_gd(xs, ys, t, error) for t in (1, 2, 3, 4)]
        fixed, ding = (build_baseline("online_gd", shrink=s)(xs, ys) for s in (True, False))
        causal = [
            causal_at_depth(xs, ys, causal_lr, layers, fixed, ding, k, task.normaliser, error)
            for layers in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
        ]
    last = causal[-4:]  # the rate of the last doublings: distance ~ rho^layers
    rate = math.exp(
        math.log(last[-1]["to_fixed_point"] / last[0]["to_fixed_point"]) / (last[-1]["layers"] - last[0]["layers"])
    )
    return {
        "n_dims": n_dims,
        "k": k,
        "n_prompts": n_prompts,
        "seed": seed,
        "causal_lr": causal_lr,
        "prefix": prefix,
        "causal": causal,
        "rate_per_layer": rate,
        "error": {
            "fixed_point": error(fixed),
            "ding_online_gd": error(ding),
            "least_squares": error(build_baseline("least_squares")(xs, ys)),
        },
    }


def prefix_against_gd(xs: torch.Tensor, ys: torch.Tensor, t: int, error) -> dict:
    """The prefix construction of t layers against t GD steps, at a step size exact in float32."""
    lr = 0.25  # exact in the float32 weights gd_lsa builds
    built, steps = (
        gd_lsa(xs.shape[-1], lr, t, mask="prefix").double()(xs, ys),
        build_baseline("gd", steps=t, lr=lr)(xs, ys),
    )
    relative = ((built - steps).abs() / steps.abs().clamp(min=1)).max().item()  # GD diverges on short prefixes
    return {"layers": t, "lr": lr, "max_relative_difference": relative, "error": error(built)}


def causal_at_depth(xs, ys, lr: float, layers: int, fixed, ding, k: int, norm: float, error) -> dict:
    """The causal construction of `layers` layers: its distance at k to the two fixed points, its error."""
    built = gd_lsa(xs.shape[-1], lr, layers, mask="causal").double()(xs, ys)
    return {
        "layers": layers,
        "to_fixed_point": (((built - fixed)[:, k] ** 2).mean() / norm).item(),
        "to_ding": (((built - ding)[:, k] ** 2).mean() / norm).item(),
        "error": error(built),
    }


# ---------------------------------------------------------------- b, c: causal against prefix


def run_errors(run: str, k: int | None, n_prompts: int, seed: int) -> dict:
    """A run's per-prompt squared error at k on the standard setting (the test part of probe_setting's
    draw, over the error of predicting 0), beside that of as many GD steps as the model has layers at
    the line-searched step size."""
    state = read_prompt_run(run)
    task = task_from_config(state["config"]["task"])
    model = model_from_state(state)
    n_points = state["config"]["task"]["curriculum"]["points"]["end"]
    k = n_points - 1 if k is None else k
    fit, test = split(setting_prompts("standard", task, 3 * n_prompts, n_points, seed), 2 * n_prompts)
    lrs = best_gd_lrs(fit.xs, fit.ys, k)
    steps = model.config.n_layer
    if steps not in GD_STEPS:
        raise ValueError(f"{run}: no GD step count {steps} in the probe's grid")
    gd = algorithm_predictions(test, lrs)[f"gd_{steps}"][:, k]
    with torch.no_grad():
        preds = model(test.xs, test.ys)[:, k].double()
    target = test.targets[:, k].double()
    cfg = state["config"]
    return {
        "run": run,
        "arch": model.config.arch,
        "mask": model.config.mask,
        "n_layer": steps,
        "seed": cfg["trainer"]["seed"],
        "k": k,
        "model": (preds - target) ** 2 / task.normaliser,
        "gd": (gd - target) ** 2 / task.normaliser,
        "gd_lr": lrs[GD_STEPS.index(steps)],
    }


def masks(runs: list[str], k: int | None = None, n_prompts: int = 1280, seed: int = 0) -> dict:
    """Causal against prefix mask, runs paired by architecture, depth and training seed, on the same
    prompts: each run's error at k with a paired 5-95% band on its error minus t-step GD's (t = its
    layers), and per pair a band on prefix minus causal. Verdicts, fixed before the runs:
    - von Oswald (lsa): with the prefix mask the error is at most t-step GD's, on every seed (per t);
    - Ding (lsa, 2 and 3 layers): prefix below causal on every seed (the point estimates);
    - Ding (transformer): prefix below causal on every seed with the band below 0."""
    counts = bootstrap_counts(n_prompts, seed)
    found = [run_errors(r, k, n_prompts, seed) for r in runs]
    rows: list[dict] = []
    pairs: dict[tuple, dict] = {}
    for e in found:
        rows.append(
            {
                **{key: e[key] for key in ("run", "arch", "mask", "n_layer", "seed", "k", "gd_lr")},
                "error": e["model"].mean().item(),
                "gd_error": e["gd"].mean().item(),
                "minus_gd_band": band(counts @ (e["model"] - e["gd"]) / n_prompts),
            }
        )
        pairs.setdefault((e["arch"], e["n_layer"], e["seed"]), {})[e["mask"]] = e
    compared = []
    for (arch, layers, s), by_mask in sorted(pairs.items()):
        if set(by_mask) != {"causal", "prefix"}:
            continue
        diff = by_mask["prefix"]["model"] - by_mask["causal"]["model"]
        compared.append(
            {"arch": arch, "n_layer": layers, "seed": s, "prefix_minus_causal": diff.mean().item()}
            | {"band": band(counts @ diff / n_prompts)}
        )
    return {"n_prompts": n_prompts, "seed": seed, "runs": rows, "pairs": compared} | {
        "verdicts": mask_verdicts(rows, compared)
    }


def mask_verdicts(rows: list[dict], pairs: list[dict]) -> list[dict]:
    """The criteria of `masks`, on every group of 3 seeds or more (fewer: not judged)."""
    out = []
    for layers in sorted({r["n_layer"] for r in rows if r["arch"] == "lsa" and r["mask"] == "prefix"}):
        prefix = [r for r in rows if r["arch"] == "lsa" and r["mask"] == "prefix" and r["n_layer"] == layers]
        held = sum(r["error"] <= r["gd_error"] for r in prefix)
        out.append(
            {
                "claim": f"von Oswald: {layers}-layer prefix lsa at most {layers}-step GD's error",
                "held_on": held,
                "seeds": len(prefix),
                "judged": len(prefix) >= 3,
                "holds": held == len(prefix) >= 3,
            }
        )
    for arch, layers_judged, needs_band in (("lsa", (2, 3), False), ("transformer", None, True)):
        for layers in sorted({p["n_layer"] for p in pairs if p["arch"] == arch}):
            if layers_judged is not None and layers not in layers_judged:
                continue
            group = [p for p in pairs if p["arch"] == arch and p["n_layer"] == layers]
            held = sum((p["band"][1] < 0) if needs_band else (p["prefix_minus_causal"] < 0) for p in group)
            out.append(
                {
                    "claim": f"Ding: {layers}-layer {arch}, prefix below causal" + " (band below 0)" * needs_band,
                    "held_on": held,
                    "seeds": len(group),
                    "judged": len(group) >= 3,
                    "holds": held == len(group) >= 3,
                }
            )
    return out


# ---------------------------------------------------------------- d: GD and Newton counts with depth


def counts_by_layer(report: dict, setting: str) -> list[dict]:
    """Per layer from 1 on, the matching GD step count and Newton iteration, each with its band."""

    def member(entry: dict, fam: str) -> dict:
        e = entry["families"][fam]
        steps = [int(n.rsplit("_", 1)[1]) for n in (e["closest"], *e["band"])]
        return {"count": steps[0], "band": steps[1:], "at_edge": e["at_edge"], "distance": e["distance"]}

    return [
        {"layer": e["layer"], "verdict": e["verdict"], "gd": member(e, "gd"), "newton": member(e, "newton")}
        for e in report["settings"][setting]["layers"][1:]
    ]


def depth(reports: dict[str, dict], ill_conditioned: str = "kappa_10") -> dict:
    """Fu et al. 2024's two claims on sweep=algorithms JSONs (`reports`, by path), with criteria fixed
    before the runs, over the layers whose verdict is not "none":
    - with depth, Newton's count rises by at most 4 per layer at every step while GD's grows by a
      factor of 2 or more per layer (geometric mean): GD's count grows faster;
    - on ill-conditioned inputs (a report with both `standard` and `ill_conditioned`: a model trained on
      isotropic inputs), GD's count is at least twice that on standard inputs on most layers, while
      Newton's changes by at most 2 on most layers (layers with a verdict other than "none" on both)."""
    out = []
    for path, report in reports.items():
        out += [depth_verdict(path, report, setting) for setting in report["settings"]]
        if ill_conditioned in report["settings"] and "standard" in report["settings"]:
            pairs = [
                (a, b)
                for a, b in zip(counts_by_layer(report, "standard"), counts_by_layer(report, ill_conditioned))
                if "none" not in (a["verdict"], b["verdict"])
            ]
            gd_rises = sum(b["gd"]["count"] >= 2 * a["gd"]["count"] for a, b in pairs)
            newton_holds = sum(abs(b["newton"]["count"] - a["newton"]["count"]) <= 2 for a, b in pairs)
            out.append(
                {
                    "report": path,
                    "run": report["run"],
                    "kappa": report.get("kappa", 1.0),
                    "setting": f"standard against {ill_conditioned}",
                    "gd_doubles_on": gd_rises,
                    "newton_holds_on": newton_holds,
                    "layers_compared": len(pairs),
                    "holds": gd_rises > len(pairs) / 2 and newton_holds > len(pairs) / 2,
                }
            )
    return {"verdicts": out}


def depth_verdict(path: str, report: dict, setting: str) -> dict:
    """Fu et al.'s first claim on one setting of one report (depth)."""
    layers = [c for c in counts_by_layer(report, setting) if c["verdict"] != "none"]
    newton = [c["newton"]["count"] for c in layers]
    gd = [c["gd"]["count"] for c in layers]
    gd_growth = math.exp(math.log(gd[-1] / gd[0]) / (len(gd) - 1)) if len(gd) > 1 else None
    newton_steps = [b - a for a, b in zip(newton, newton[1:])]
    holds = bool(newton_steps) and max(newton_steps) <= 4 and gd_growth is not None and gd_growth >= 2
    return {
        "report": path,
        "run": report["run"],
        "kappa": report.get("kappa", 1.0),
        "setting": setting,
        "layers": counts_by_layer(report, setting),
        "gd_growth_per_layer": gd_growth,
        "newton_steps_per_layer": newton_steps,
        "holds": holds,
    }


# ---------------------------------------------------------------- e: along training


def dynamics(runs: list[str], k: int | None = None, n_prompts: int = 640, seed: int = 0) -> dict:
    """Each run's trajectory (run_dynamics) and whether it passed through GD-like before it became
    least-squares-like: a snapshot whose verdict is a gd member outright, and a later one whose verdict
    is least_squares (outright or in a tie)."""
    out = []
    for run in runs:
        points = run_dynamics(run, k, n_prompts, seed)
        out.append({"run": run} | order(points) | {"points": points})
    holds = sum(bool(r["gd_before_least_squares"]) for r in out)
    return {"n_prompts": n_prompts, "seed": seed, "runs": out, "holds_on": [holds, len(out)]}


def order(points: list[dict]) -> dict:
    """The first step whose verdict is a gd member outright, the first whose verdict is least_squares
    (outright or in a tie), and whether least-squares-like came after GD-like."""
    gd = [p["step"] for p in points if family(p["verdict"]) == "gd"]
    ls = [p["step"] for p in points if "least_squares" in p["verdict"].removeprefix("tie: ").split(" / ")]
    after = bool(gd) and any(step > gd[0] for step in ls)
    return {
        "first_gd": gd[0] if gd else None,
        "first_least_squares": ls[0] if ls else None,
        "gd_before_least_squares": after,
    }


def run_dynamics(run: str, k: int | None, n_prompts: int, seed: int) -> list[dict]:
    """The output's distance at k to each family's closest member, at every snapshot of a run
    (model_<step>.pt) and its final state, on the standard setting."""
    path = Path(run)
    snapshots = sorted(path.glob("model_*.pt"), key=lambda p: int(re.sub(r"\D", "", p.stem)))
    points: list[dict] = []
    for source in [*snapshots, path]:
        state = read_run(source)
        if points and state["step"] == points[-1]["step"]:  # the final state is the last snapshot
            continue
        task = task_from_config(state["config"]["task"])
        n_points = state["config"]["task"]["curriculum"]["points"]["end"]
        at = min(task.n_dims if k is None else k, n_points - 1)
        report = probe_setting(model_from_state(state), task, "standard", n_points, at, n_prompts, seed)
        output = report["output"]
        points.append(
            {
                "step": state["step"],
                "k": at,
                "error": output["error"][at],
                "verdict": output["verdict"],
                "families": {
                    f: {"closest": e["closest"], "distance": e["distance"]} for f, e in output["families"].items()
                },
            }
        )
    return points


# ---------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(prog="python -m minicl.mechanism", description=__doc__.split("\n\n")[0])
    out.add_argument("experiment", choices=["constructions", "masks", "depth", "dynamics"])
    out.add_argument(
        "inputs", nargs="*", help="runs or folders of runs (masks, dynamics), sweep=algorithms JSONs (depth)"
    )
    out.add_argument("--out", required=True, help="the results JSON to write")
    out.add_argument("--k", type=int, default=None)
    out.add_argument("--n-prompts", type=int, default=None, help="test prompts (masks: 1280, dynamics: 640)")
    out.add_argument("--figure", default=None, help="dynamics: the figure to write")
    return out


def runs_in(paths: list[str]) -> list[str]:
    """Each path that is a run, and the runs inside each that is not, in order."""
    out = []
    for path in map(Path, paths):
        found = (
            [path] if (path / "state.pt").is_file() else sorted(p for p in path.iterdir() if (p / "state.pt").is_file())
        )
        if not found:
            raise FileNotFoundError(f"{path} is no run directory and holds none")
        out += [str(p) for p in found]
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    provenance = stamp(
        "python -m minicl.mechanism " + " ".join(sys.argv[1:] if argv is None else argv), args.experiment
    )
    if args.experiment == "constructions":
        report = constructions()
    elif args.experiment == "masks":
        report = masks(runs_in(args.inputs), args.k, args.n_prompts or 1280)
    elif args.experiment == "depth":
        report = depth({p: json.loads(Path(p).read_text()) for p in args.inputs})
    else:
        report = dynamics(runs_in(args.inputs), args.k, args.n_prompts or 640)
        if args.figure:
            dynamics_figure(report, Path(args.figure))
    report |= provenance
    write_json(Path(args.out), report)
    for verdict in report.get("verdicts", []):
        print({key: value for key, value in verdict.items() if key != "layers"})
    return report


if __name__ == "__main__":
    main()
