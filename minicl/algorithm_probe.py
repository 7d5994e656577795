"""Which algorithm does each layer of a trained model match? (`python -m minicl.explore run=RUN
sweep=algorithms`, after Akyurek et al. 2023 and Fu et al. 2024.)

Each layer's residual stream is read by a ridge readout, and its predictions are compared with
those of gradient descent (a grid of step counts, each at its line-searched step size), Newton's
iteration for the pseudo-inverse, ridge (a fine grid of lam), least squares, one pass of online GD
(Ding et al. 2024's causal fixed point, and minicl's mean-normalised one) and predicting 0:

- **Grids to convergence.** GD runs to 2^40 steps and Newton to 64 iterations, both in closed form,
  and the JSON gives each grid's last member's distance to least squares; a match on a grid's last
  member (or either end of ridge's) is flagged `at_edge`.
- **One input distribution per setting.** Fitting prompts (the readouts, GD's step sizes) and test
  prompts come from one draw of the setting, so they share its rotation.
- **A band on each match.** The closest algorithm is compared with the closest of another family
  by a paired bootstrap over prompts of the difference of their distances: where its 5-95% band
  reaches 0 the verdict is a tie that names both. Within each family, the matching member's band
  is the 5-95% range of the bootstrap's closest member.
- **Fu et al.'s similarity of errors** beside the distance: the cosine of the residual vectors.

A layer is read by fitting, for each algorithm, a linear readout from the layer's state to that
algorithm's prediction (as Akyurek et al. 2023 probe for an algorithm's quantities): the distance is
the share of the algorithm's prediction the readout cannot recover. A linear readout sees an
algorithm only up to an affine map of its prediction, and only what is linearly readable: a layer
far from every algorithm may still hold what they need in another form.
"""

import math
from pathlib import Path

import torch

from minicl.baselines import (
    LeastSquares,
    OnlineGD,
    Ridge,
    gd_factor,
    newton_factor,
    prefix_cross,
    prefix_gram,
    prefix_problems,
)
from minicl.common import bootstrap_counts, write_json
from minicl.config import task_from_config
from minicl.model import LSA, PromptModel, Transformer
from minicl.plots import algorithms_figure
from minicl.rundir import model_from_state, output_dir, read_prompt_run, shipped_path, stamp, training_seconds
from minicl.settings import Prompts, setting_prompts
from minicl.tasks import Linear, Quadratic, Task

GD_STEPS = sorted({round(2 ** (i / 2)) for i in range(81)})  # 1, 2, 3, 4, 6, 8, 11, 16, ..., 2^40
NEWTON_STEPS = list(range(1, 65))  # in closed form; float64 has converged long before 64
RIDGE_LAMS = [10 ** (e / 4) for e in range(-16, 9)]  # 1e-4 .. 100, four a decade
LR_GRID = torch.logspace(-3, 1, 61).tolist()  # times 1 / the mean largest eigenvalue of the prefixes' Hessians
GRIDS = ("gd", "newton", "ridge")  # the families with a grid; the other algorithms are families of one
EDGES = {f"gd_{GD_STEPS[-1]}", f"newton_{NEWTON_STEPS[-1]}", f"ridge_{RIDGE_LAMS[0]:g}", f"ridge_{RIDGE_LAMS[-1]:g}"}
BOOTSTRAP = 1000
UNREADABLE = 0.5  # a layer none of whose algorithms' predictions is more than half readable matches "none"


def family(name: str) -> str:
    """gd_32 -> gd, newton_5 -> newton, ridge_0.1 -> ridge; any other algorithm is its own family."""
    return next((f for f in GRIDS if name.startswith(f + "_")), name)


def best_gd_lrs(xs: torch.Tensor, ys: torch.Tensor, k: int) -> list[float]:
    """For each of GD_STEPS, the step size whose steps predict y_k from the k pairs before it best,
    in mean squared error over the prompts: a line search over LR_GRID scaled to the inputs, all in
    one eigendecomposition of the k pairs' Hessians."""
    hessian, gradient = (p[:, k] for p in prefix_problems(xs[:, : k + 1], ys[:, : k + 1]))
    lam, vecs = torch.linalg.eigh(hessian)  # (B, D), (B, D, D)
    along = (vecs.mT @ gradient.unsqueeze(-1)).squeeze(-1)
    query = (xs[:, k].double().unsqueeze(-2) @ vecs).squeeze(-2)  # x_k in the eigenbasis
    lrs = torch.tensor(LR_GRID, dtype=torch.float64) / lam[:, -1].mean()
    best = []
    for steps in GD_STEPS:
        preds = (query * gd_factor(lam, lrs[:, None, None], steps) * along).sum(-1)  # (len(LR_GRID), B)
        errors = ((preds - ys[:, k].double()) ** 2).mean(-1)
        best.append(lrs[torch.nan_to_num(errors, nan=math.inf).argmin()].item())
    return best


def algorithm_predictions(test: Prompts, lrs: list[float]) -> dict[str, torch.Tensor]:
    """{label: (B, N) predictions on the prompts} of GD (GD_STEPS at their step sizes `lrs`),
    Newton (NEWTON_STEPS), ridge (RIDGE_LAMS), least squares, online GD and predicting 0."""
    xs, ys = test.xs.double(), test.ys.double()
    # in each prefix's eigenbasis, as gd_weights and newton_weights, keeping only the predictions
    hessian, gradient = prefix_problems(xs, ys)
    lam, vecs = torch.linalg.eigh(hessian)
    along, query = (vecs.mT @ gradient.unsqueeze(-1)).squeeze(-1), (xs.unsqueeze(-2) @ vecs).squeeze(-2)
    out = {f"gd_{t}": (query * gd_factor(lam, lr, t) * along).sum(-1) for t, lr in zip(GD_STEPS, lrs)}
    s, vecs = torch.linalg.eigh(prefix_gram(xs))
    along, query = (vecs.mT @ prefix_cross(xs, ys).unsqueeze(-1)).squeeze(-1), (xs.unsqueeze(-2) @ vecs).squeeze(-2)
    out |= {f"newton_{t}": (query * newton_factor(s, t) * along).sum(-1) for t in NEWTON_STEPS}
    for lam in RIDGE_LAMS:
        out[f"ridge_{lam:g}"] = Ridge(lam=lam)(xs, ys)
    out["least_squares"] = LeastSquares()(xs, ys)
    out["online_gd"] = OnlineGD()(xs, ys)  # Ding et al.'s causal fixed point
    out["online_gd_shrink"] = OnlineGD(shrink=True)(xs, ys)  # minicl's causal lsa's fixed point
    out["zero"] = torch.zeros_like(ys)  # a layer that says nothing of y is closest to this
    return out


def layer_states(model: PromptModel, xs: torch.Tensor, ys: torch.Tensor) -> list[torch.Tensor]:
    """The model's residual stream at each prediction's position, (B, N, width) per layer (the
    embedding first), in float64."""
    if not isinstance(model, (Transformer, LSA)):
        raise ValueError(f"sweep=algorithms reads the layers of transformer and lsa models, not {model.config.arch!r}")
    with torch.no_grad():
        return [h.double() for h in model.hidden_states(xs, ys)]


READOUT_LAMS = torch.logspace(-6, 2, 9, dtype=torch.float64)  # times the mean eigenvalue of the states' Gram matrix


def readouts(fit: torch.Tensor, targets: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Ridge readouts (with a bias) from states to targets, independently per leading index (a
    position): fit (P, B, W) and targets (P, B, T) -> predictions on test (P, B', W) as (P, B', T).
    Each target's lam is chosen from READOUT_LAMS by fitting on one half of the fit prompts and
    scoring on the other; then it is fitted on all of them."""
    a, b = (torch.cat((h, torch.ones_like(h[..., :1])), -1) for h in (fit, test))  # (P, B, W + 1)
    half = a.shape[1] // 2
    lam, vecs = torch.linalg.eigh(a[:, :half].mT @ a[:, :half])
    along = vecs.mT @ a[:, :half].mT @ targets[:, :half]  # (P, W + 1, T)
    scale = lam.mean(-1).clamp(min=1e-12)[:, None, None]
    held_out = torch.stack(
        [
            ((a[:, half:] @ vecs @ (along / (lam.unsqueeze(-1) + r * scale)) - targets[:, half:]) ** 2).mean(1)
            for r in READOUT_LAMS
        ]
    )  # (len(READOUT_LAMS), P, T)
    chosen = READOUT_LAMS[torch.nan_to_num(held_out, nan=math.inf).argmin(0)] * scale[..., 0] * 2  # (P, T); all prompts
    lam, vecs = torch.linalg.eigh(a.mT @ a)
    along = vecs.mT @ a.mT @ targets  # (P, W + 1, T)
    return b @ vecs @ (along / (lam.unsqueeze(-1) + chosen.unsqueeze(-2)))


def y_readouts(fit: list[torch.Tensor], fit_ys: torch.Tensor, test: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, the test predictions (B, N) of readouts from the layer's state at position k to y_k,
    for each k: how much of y the layer makes linearly readable."""
    ys = fit_ys.double().T.unsqueeze(-1)  # (N, B, 1)
    return [readouts(f.transpose(0, 1), ys, t.transpose(0, 1)).squeeze(-1).T for f, t in zip(fit, test)]


def band(samples: torch.Tensor) -> list[float]:
    """The 5-95% range of bootstrap samples."""
    return torch.quantile(samples, torch.tensor([0.05, 0.95], dtype=samples.dtype)).tolist()


def matches(per_prompt: torch.Tensor, names: list[str], counts: torch.Tensor) -> dict:
    """The match at k from per-prompt distances (B, A) to the algorithms `names`: each one's mean,
    the closest algorithm with a paired bootstrap band on its distance minus that of the closest of
    another family (a tie where the band reaches 0), and per family its closest member with the
    5-95% range of the bootstrap's closest member."""
    distance, resampled = per_prompt.mean(0), counts @ per_prompt / per_prompt.shape[0]  # (A,), (R, A)
    families: dict[str, dict] = {}
    for f in dict.fromkeys(map(family, names)):
        members = [i for i, n in enumerate(names) if family(n) == f]
        best = members[int(distance[members].argmin())]
        picked = torch.tensor(members)[resampled[:, members].argmin(1)]
        low, high = (names[int(torch.quantile(picked.double(), q, interpolation="nearest"))] for q in (0.05, 0.95))
        families[f] = {"closest": names[best], "distance": distance[best].item(), "band": [low, high]}
    ranked = sorted(families.values(), key=lambda e: e["distance"])
    closest, runner_up = ranked[0]["closest"], ranked[1]["closest"]
    gap = band(resampled[:, names.index(closest)] - resampled[:, names.index(runner_up)])
    tie = gap[1] >= 0
    return {
        "distance": dict(zip(names, distance.tolist())),
        "closest": closest,
        "runner_up": runner_up,
        "difference_band": gap,  # closest's distance minus runner_up's, 5-95%
        "tie": tie,
        "verdict": f"tie: {closest} / {runner_up}" if tie else closest,
        "at_edge": closest in EDGES or (tie and runner_up in EDGES),
        "families": {f: e | {"at_edge": e["closest"] in EDGES} for f, e in families.items()},
    }


def error_cosines(preds: torch.Tensor, algorithms: dict[str, torch.Tensor], targets: torch.Tensor) -> dict:
    """Fu et al.'s similarity of errors at k: the cosine, over prompts, of the residual vectors (B,)."""
    residual = preds - targets
    return {
        n: torch.nn.functional.cosine_similarity(residual, a - targets, dim=0).item() for n, a in algorithms.items()
    }


def split(prompts: Prompts, first: int) -> tuple[Prompts, Prompts]:
    """The first `first` prompts and the rest."""

    def part(rows: slice) -> Prompts:
        queries = None if prompts.queries is None else prompts.queries[rows]
        return Prompts(
            prompts.xs[rows], prompts.ys[rows], queries, prompts.targets[rows], prompts.task, prompts.clean[rows]
        )

    return part(slice(0, first)), part(slice(first, None))


def probe_setting(
    model: PromptModel,
    task: Task,
    setting: str,
    n_points: int,
    k: int,
    n_prompts: int,
    seed: int,
    lrs: list[float] | None = None,
) -> dict:
    """Per layer: the error per k of a readout of y, and its match at k (layer_match); the output's
    error per k and its match at k (output_match). GD runs at the step sizes `lrs` (one per
    GD_STEPS), by default those that predict y_k best on the fitting prompts: the best case for GD.
    Fitting (2 n_prompts) and test prompts (n_prompts) come from one draw of the setting."""
    fit, test = split(setting_prompts(setting, task, 3 * n_prompts, n_points, seed), 2 * n_prompts)
    lrs = best_gd_lrs(fit.xs, fit.ys, k) if lrs is None else lrs
    algorithms, fitted = algorithm_predictions(test, lrs), algorithm_predictions(fit, lrs)
    with torch.no_grad():
        output = model(test.xs, test.ys).double()
    counts = bootstrap_counts(n_prompts, seed, BOOTSTRAP)
    at_k = {n: a[:, k] for n, a in algorithms.items()}
    targets, norm = test.targets.double(), task.normaliser

    def error(preds: torch.Tensor) -> list[float]:
        return (((preds - targets) ** 2).mean(0) / norm).tolist()

    states = layer_states(model, fit.xs, fit.ys), layer_states(model, test.xs, test.ys)
    # predicting 0 is readable from anything; GD diverging on some prompts cannot be read
    readable = [n for n in algorithms if n != "zero" and (fitted[n][:, k] ** 2).sum().isfinite()]
    goals = torch.stack([fitted[n][:, k] for n in readable], -1)  # (2B, A): what each readout is fitted to
    truth = torch.stack([at_k[n] for n in readable], -1)  # (B, A)
    held = intermediates(fit, k), intermediates(test, k)
    layers = [
        {"layer": i, "error": error(y_read), **layer_match(f[:, k], t[:, k], goals, truth, readable, counts)}
        | {"error_cosine": error_cosines(y_read[:, k], at_k, targets[:, k])}
        | {"intermediates": unreadable(f[:, k], t[:, k], *held)}
        for i, (f, t, y_read) in enumerate(zip(*states, y_readouts(states[0], fit.ys, states[1])))
    ]
    return {
        "gd_lrs": {str(t): lr for t, lr in zip(GD_STEPS, lrs)},
        "convergence": convergence(at_k, norm),
        "algorithm_error": {name: error(a) for name, a in algorithms.items()},
        "layers": layers,
        "output": {"error": error(output)} | output_match(output[:, k], at_k, targets[:, k], norm, counts),
    }


def convergence(at_k: dict[str, torch.Tensor], norm: float) -> dict[str, float]:
    """Each grid's last member's distance to least squares at k: how far the grid is from converged."""
    last = (f"gd_{GD_STEPS[-1]}", f"newton_{NEWTON_STEPS[-1]}")
    return {name: (((at_k[name] - at_k["least_squares"]) ** 2).mean() / norm).item() for name in last}


def layer_match(
    fit_state: torch.Tensor, test_state: torch.Tensor, goals: torch.Tensor, truth: torch.Tensor, names, counts
) -> dict:
    """A layer's match at k: per algorithm, a readout from the layer's state (2B, W) fitted to its
    predictions on the fitting prompts (goals, (2B, A)); the share of its test predictions (truth,
    (B, A)) the readout cannot recover is the distance; "none" where no share is below UNREADABLE."""
    decoded = readouts(fit_state[None], goals[None], test_state[None])[0]  # (B, A)
    unread = (decoded - truth) ** 2 / (truth**2).mean(0).clamp(min=1e-300)
    match = matches(torch.nan_to_num(unread, nan=math.inf), names, counts)
    return match | ({"verdict": "none", "tie": False} if match["distance"][match["closest"]] > UNREADABLE else {})


def intermediates(prompts: Prompts, k: int) -> dict[str, torch.Tensor]:
    """Akyurek et al. 2023's intermediates at k, (B, D) each: X^T y / k (the first GD step's
    direction) and least squares' weight vector."""
    return {
        "xty": prefix_cross(prompts.xs, prompts.ys)[:, k] / max(k, 1),
        "w_least_squares": LeastSquares().weights(prompts.xs[:, : k + 1], prompts.ys[:, : k + 1])[:, k],
    }


def unreadable(fit_state: torch.Tensor, test_state: torch.Tensor, fitted: dict, truths: dict) -> dict:
    """The share of each intermediate (summed over coordinates and prompts) that a linear readout of
    the layer's state cannot recover: whether the layer holds it linearly, whatever it predicts."""
    out = {}
    for name, truth in truths.items():
        decoded = readouts(fit_state[None], fitted[name][None], test_state[None])[0]
        out[name] = (((decoded - truth) ** 2).sum() / (truth**2).sum()).item()
    return out


def output_match(
    preds: torch.Tensor, at_k: dict[str, torch.Tensor], targets: torch.Tensor, norm: float, counts
) -> dict:
    """The output's match at k: its distance to each algorithm (the mean squared difference over the
    error of predicting 0), Fu et al.'s similarity of errors, the cosine similarity of the
    predictions, and a paired band on its error minus each algorithm's."""
    per_prompt = torch.stack([(preds - a) ** 2 for a in at_k.values()], 1) / norm  # (B, A); diverged GD: inf
    per_prompt = torch.nan_to_num(per_prompt, nan=math.inf)
    squared = (preds - targets) ** 2 / norm
    return {
        **matches(per_prompt, list(at_k), counts),
        "error_cosine": error_cosines(preds, at_k, targets),
        "cosine": {name: torch.nn.functional.cosine_similarity(preds, a, dim=0).item() for name, a in at_k.items()},
        "error_difference_band": {  # the model's error at k minus each algorithm's, 5-95%
            name: band(counts @ (squared - (a - targets) ** 2 / norm) / len(preds)) for name, a in at_k.items()
        },
    }


def probe_algorithms(
    run: str | Path,
    k: int | None = None,
    n_prompts: int = 1280,
    seed: int = 0,
    settings: tuple[str, ...] = ("standard", "skewed"),
    out_dir: str | Path | None = None,
) -> dict:
    """`python -m minicl.explore run=RUN sweep=algorithms`: which algorithm each layer of a run's
    model matches (probe_setting), on each setting; writes algorithms.json and algorithms.png to
    RUN/explore (a shipped model's: runs/pretrained/<name>/explore) or `out_dir`. On the CPU."""
    state = read_prompt_run(run)
    task_cfg = state["config"]["task"]
    task = task_from_config(task_cfg)
    if not isinstance(task, Linear) or task.classification or isinstance(task, Quadratic):
        raise ValueError(f"sweep=algorithms compares with linear learners: a run of a linear task, not {task.name!r}")
    model = model_from_state(state)
    n_points = task_cfg["curriculum"]["points"]["end"]
    k = min(task.n_dims if k is None else k, n_points - 1)
    path = Path(run)
    report = {
        "sweep": "algorithms",
        **stamp(command(run, k, n_prompts, seed, settings), "algorithms"),
        "run": str(run),
        "task": task.name,
        "n_dims": task.n_dims,
        "kappa": getattr(task, "kappa", 1.0),
        "n_points": n_points,
        "k": k,
        "arch": model.config.arch,
        "mask": model.config.mask,
        "n_layer": model.config.n_layer,
        "n_prompts": n_prompts,
        "seed": seed,
        "step": state.get("step"),
        "train_seconds": None if shipped_path(run) or path.is_file() else training_seconds(path),
        "settings": {s: probe_setting(model, task, s, n_points, k, n_prompts, seed) for s in settings},
    }
    out = Path(out_dir or output_dir(run) / "explore")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "algorithms.json", report)
    algorithms_figure(report, out / "algorithms.png")
    return report


def command(run: str | Path, k: int, n_prompts: int, seed: int, settings: tuple[str, ...]) -> str:
    """The explore command line that asks for this probe."""
    given = {
        "k": k,
        "n_prompts": n_prompts if n_prompts != 1280 else None,
        "seed": seed or None,
        "settings": f"[{','.join(settings)}]" if tuple(settings) != ("standard", "skewed") else None,
    }
    options = "".join(f" {key}={value}" for key, value in given.items() if value is not None and key != "settings")
    listed = f" 'settings={given['settings']}'" if given["settings"] else ""  # quoted: a shell globs [...]
    return f"python -m minicl.explore run={run} sweep=algorithms{options}{listed}"


def summary(report: dict) -> str:
    """The verdict per layer at k (the closest algorithm, or a tie naming two) with its distance,
    and the output's error beside that of as many GD steps as the model has layers (at the
    line-searched step size) with their cosine similarity."""
    k, lines = report["k"], []
    gd = f"gd_{report['n_layer']}"
    for setting, s in report["settings"].items():
        lines.append(f"{setting} (k={k}): closest algorithm per layer, distance / error of predicting 0")
        for entry in [*s["layers"], {**s["output"], "layer": "output"}]:
            name, edge = entry["closest"], " (at the grid's edge)" * entry["at_edge"]
            lines.append(
                f"  layer {entry['layer']}: {entry['verdict']} {entry['distance'][name]:.4f}{edge}; "
                f"error {entry['error'][k]:.4f}"
            )
        if gd in s["algorithm_error"]:
            lines.append(
                f"  output error {s['output']['error'][k]:.4f} against {gd}'s {s['algorithm_error'][gd][k]:.4f} "
                f"(lr {s['gd_lrs'][gd[3:]]:.4g}), cosine similarity {s['output']['cosine'][gd]:.4f}"
            )
    return "\n".join(lines)
