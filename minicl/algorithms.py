"""Which algorithm is inside?

- `one_step_gd(n_dims, lr)` is a one-layer linear self-attention model (arch='lsa') with the
  weights von Oswald et al. 2023 construct: its prediction at every position is that of one step
  of gradient descent from w = 0, step size lr, on the squared loss of the pairs before it (the
  `gd` baseline with steps=1).
- `probe_algorithms(run)` (`python -m minicl.explore run=RUN sweep=algorithms`) reads each layer
  of a trained model with a ridge readout and measures how far it is from gradient descent (a
  log grid of steps, each at its line-searched step size), Newton's iteration for the
  pseudo-inverse (1-20 iterations), ridge (a log grid of lam) and least squares, on the standard
  setting and on skewed inputs (Akyurek et al. 2023, Fu et al. 2024).
"""

import math
from pathlib import Path

import torch

from minicl.baselines import (
    LeastSquares,
    Ridge,
    gd_factor,
    gd_weights,
    linear_predictions,
    newton_weights,
    prefix_problems,
)
from minicl.common import write_json
from minicl.config import task_from_config
from minicl.model import LSA, LinearSelfAttention, ModelConfig, PromptModel, Transformer, build_model
from minicl.plots import algorithms_figure
from minicl.rundir import model_from_state, output_dir, read_prompt_run, shipped_path, stamp, training_seconds
from minicl.settings import Prompts, setting_prompts
from minicl.tasks import Linear, Quadratic, Task


def one_step_gd(n_dims: int, lr: float) -> LSA:
    """An lsa model of one layer and one head whose prediction is one GD step of size `lr`: with
    tokens e = (x, y), W_K = W_Q = [[I, 0], [0, 0]] make the attention score of pair m for query x
    the product x_m . x, and W_V = [[0, 0], [0, -lr]] moves -lr y_m into the query's y slot; the
    mean over the i pairs gives -(lr / i) sum_m y_m x_m . x, minus the prediction x . w_1 of
    w_1 = lr (1/i) sum_m y_m x_m, the first step on (1/2i) sum_m (w . x_m - y_m)^2."""
    model = build_model(ModelConfig(n_dims=n_dims, arch="lsa", n_layer=1, n_head=1))
    assert isinstance(model, LSA)
    layer = model.layers[0]
    assert isinstance(layer, LinearSelfAttention)
    width = n_dims + 1
    reads_x = torch.zeros(width, width)
    reads_x[:n_dims, :n_dims] = torch.eye(n_dims)
    moves_y = torch.zeros(width, width)
    moves_y[n_dims, n_dims] = -lr
    with torch.no_grad():
        layer.q.copy_(reads_x[None])
        layer.k.copy_(reads_x[None])
        layer.v.copy_(moves_y[None])
    return model.eval()


# ---------------------------------------------------------------- which algorithm does each layer match?

GD_STEPS = sorted({round(2 ** (i / 2)) for i in range(25)})  # 1, 2, 3, 4, 6, 8, 11, 16, ..., 4096
NEWTON_STEPS = list(range(1, 21))
RIDGE_LAMS = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
LR_GRID = torch.logspace(-3, 1, 61).tolist()  # times 1 / the mean largest eigenvalue of the prefixes' Hessians


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
    Newton (NEWTON_STEPS), ridge (RIDGE_LAMS), least squares and predicting 0."""
    xs, ys = test.xs.double(), test.ys.double()
    gd = gd_weights(xs, ys, lrs, GD_STEPS)
    out = {f"gd_{steps}": linear_predictions(w, xs) for steps, w in zip(GD_STEPS, gd)}
    for steps, w in zip(NEWTON_STEPS, newton_weights(xs, ys, NEWTON_STEPS)):
        out[f"newton_{steps}"] = linear_predictions(w, xs)
    for lam in RIDGE_LAMS:
        out[f"ridge_{lam:g}"] = Ridge(lam=lam)(xs, ys)
    out["least_squares"] = LeastSquares()(xs, ys)
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


def ridge_readouts(fit: list[torch.Tensor], fit_ys: torch.Tensor, test: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, the test predictions (B, N) of a ridge readout (with a bias) from the layer's
    state at position k to y_k, for each k: lam chosen from READOUT_LAMS by fitting on one half of
    the fit prompts and scoring on the other, then fitted on all of them."""
    out, ys = [], fit_ys.double().T.unsqueeze(-1)  # (N, B, 1)
    half = ys.shape[1] // 2
    for h_fit, h_test in zip(fit, test):
        a, b = (torch.cat((h, torch.ones_like(h[..., :1])), -1).transpose(0, 1) for h in (h_fit, h_test))  # (N, B, W+1)
        lam, vecs = torch.linalg.eigh(a[:, :half].mT @ a[:, :half])
        along = vecs.mT @ a[:, :half].mT @ ys[:, :half]  # (N, W+1, 1)
        scale = lam.mean(-1).clamp(min=1e-12)[:, None, None]
        held_out = torch.stack(
            [
                ((a[:, half:] @ vecs @ (along / (lam.unsqueeze(-1) + r * scale)) - ys[:, half:]) ** 2).mean((1, 2))
                for r in READOUT_LAMS
            ]
        )  # (len(READOUT_LAMS), N)
        chosen = READOUT_LAMS[torch.nan_to_num(held_out, nan=math.inf).argmin(0)][:, None, None] * scale
        gram = a.mT @ a
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
        beta = torch.linalg.solve(gram + chosen * eye * 2, a.mT @ ys)  # twice the prompts: lam scales with them
        out.append((b @ beta).squeeze(-1).T)
    return out


def matches(preds: torch.Tensor, algorithms: dict[str, torch.Tensor], normaliser: float, k: int) -> dict:
    """A layer's (or the output's) distance to each algorithm per k (mean squared difference over
    the normaliser, the error of predicting 0), and the closest at k."""
    distance = {name: (((preds - a) ** 2).mean(0) / normaliser).tolist() for name, a in algorithms.items()}
    return {"distance": distance, "closest": min(distance, key=lambda name: distance[name][k])}


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
    """Per layer: the ridge readout's error per k and its distance to every algorithm; the same
    for the model's output, with the cosine similarity of its predictions at k to each algorithm's.
    GD runs at the step sizes `lrs` (one per GD_STEPS), by default those that predict y_k best on
    the setting's own fitting prompts: the best case for GD."""
    fit = setting_prompts(setting, task, 2 * n_prompts, n_points, seed + 1)  # for the readouts and step sizes
    test = setting_prompts(setting, task, n_prompts, n_points, seed)
    lrs = best_gd_lrs(fit.xs, fit.ys, k) if lrs is None else lrs
    algorithms = algorithm_predictions(test, lrs)
    readouts = ridge_readouts(layer_states(model, fit.xs, fit.ys), fit.ys, layer_states(model, test.xs, test.ys))
    with torch.no_grad():
        output = model(test.xs, test.ys).double()
    targets, norm = test.targets.double(), task.normaliser
    layers = [
        {"layer": i, "error": (((r - targets) ** 2).mean(0) / norm).tolist(), **matches(r, algorithms, norm, k)}
        for i, r in enumerate(readouts)
    ]
    cosine = {
        name: torch.nn.functional.cosine_similarity(output[:, k], a[:, k], dim=0).item()
        for name, a in algorithms.items()
    }
    return {
        "gd_lrs": {str(t): lr for t, lr in zip(GD_STEPS, lrs)},
        "algorithm_error": {name: (((a - targets) ** 2).mean(0) / norm).tolist() for name, a in algorithms.items()},
        "layers": layers,
        "output": {
            "error": (((output - targets) ** 2).mean(0) / norm).tolist(),
            **matches(output, algorithms, norm, k),
            "cosine": cosine,
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
    given = {"k": k, "n_prompts": n_prompts if n_prompts != 1280 else None, "seed": seed or None}
    options = "".join(f" {key}={value}" for key, value in given.items() if value is not None)
    report = {
        "sweep": "algorithms",
        **stamp(f"python -m minicl.explore run={run} sweep=algorithms{options}"),
        "run": str(run),
        "task": task.name,
        "n_dims": task.n_dims,
        "n_points": n_points,
        "k": k,
        "arch": model.config.arch,
        "n_layer": model.config.n_layer,
        "n_prompts": n_prompts,
        "seed": seed,
        "train_seconds": None if shipped_path(run) else training_seconds(Path(run)),
        "settings": {s: probe_setting(model, task, s, n_points, k, n_prompts, seed) for s in settings},
    }
    out = Path(out_dir or output_dir(run) / "explore")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "algorithms.json", report)
    algorithms_figure(report, out / "algorithms.png")
    return report


def summary(report: dict) -> str:
    """The closest algorithm per layer at k, and the output's error beside that of as many GD
    steps as the model has layers (at the line-searched step size) with their cosine similarity."""
    k, lines = report["k"], []
    gd = f"gd_{report['n_layer']}"
    for setting, s in report["settings"].items():
        lines.append(f"{setting} (k={k}): closest algorithm per layer, distance / error of predicting 0")
        for entry in [*s["layers"], {**s["output"], "layer": "output"}]:
            name = entry["closest"]
            lines.append(
                f"  layer {entry['layer']}: {name} {entry['distance'][name][k]:.4f}; error {entry['error'][k]:.4f}"
            )
        if gd in s["algorithm_error"]:
            lines.append(
                f"  output error {s['output']['error'][k]:.4f} against {gd}'s {s['algorithm_error'][gd][k]:.4f} "
                f"(lr {s['gd_lrs'][gd[3:]]:.4g}), cosine similarity {s['output']['cosine'][gd]:.4f}"
            )
    return "\n".join(lines)
