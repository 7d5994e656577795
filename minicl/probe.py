"""Implicit weights: does the transformer compute least squares?

For linear-type tasks the prediction at position i is close to linear in the query x_i, so its
gradient with respect to the query is the weight vector the model has inferred from the first i
pairs. `implicit_weights` gets it for every prefix in one batched backward pass (the query
tokens of `model(xs, ys, queries)` are seen only by their own prediction) and compares it with
least squares and ridge on the same prefix.
"""

import torch

from minicl.baselines import LeastSquares, Ridge
from minicl.common import standard_prompts, write_json
from minicl.config import task_from_config
from minicl.plots import probe_figure
from minicl.rundir import model_from_state, output_dir, read_prompt_run


def compare(found: torch.Tensor, reference: torch.Tensor) -> dict[str, list]:
    """Per-k mean cosine similarity and relative norm error ||found - ref|| / ||ref|| over prompts;
    None where the reference is zero (no pairs yet)."""
    found, reference = found.double(), reference.double()
    ref_norm = reference.norm(dim=-1)
    cosine = (found * reference).sum(-1) / (found.norm(dim=-1) * ref_norm).clamp(min=1e-300)
    rel_error = (found - reference).norm(dim=-1) / ref_norm.clamp(min=1e-300)
    defined = (ref_norm > 0).all(0)
    return {
        "cosine": [c if ok else None for c, ok in zip(cosine.mean(0).tolist(), defined.tolist())],
        "rel_error": [e if ok else None for e, ok in zip(rel_error.mean(0).tolist(), defined.tolist())],
    }


def against_solvers(weights: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, ridge_lam: float) -> dict:
    """compare() of per-prefix weights (B, N, D) with least squares' and ridge's on the same prefixes."""
    return {
        "least_squares": compare(weights, LeastSquares().weights(xs, ys)),
        "ridge": compare(weights, Ridge(lam=ridge_lam).weights(xs, ys)),
    }


def query_gradients(model, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """d prediction_i / d query_i for every prefix i, (B, N, D), in one backward pass.
    `model` is anything with the call shape predict(xs, ys, queries)."""
    queries = xs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        preds = model(xs, ys, queries)
        (grad,) = torch.autograd.grad(preds.sum(), queries)
    return grad


def implicit_weights(model, xs: torch.Tensor, ys: torch.Tensor, ridge_lam: float = 1.0) -> dict:
    """{"weights": query_gradients(...), "least_squares": compare(...), "ridge": compare(...)}."""
    weights = query_gradients(model, xs, ys)
    return {"weights": weights, **against_solvers(weights, xs, ys, ridge_lam)}


def probe_run(
    run_dir, n_prompts: int = 1280, seed: int = 0, device="cpu", batch_size: int = 256, ridge_lam: float = 1.0
) -> dict:
    """The probe on fresh prompts of a run's task; writes RUN_DIR/explore/probe.json and probe.png."""
    state = read_prompt_run(run_dir)
    task = task_from_config(state["config"]["task"])
    model = model_from_state(state).to(device)
    n_points = state["config"]["task"]["curriculum"]["points"]["end"]
    xs, ys = standard_prompts(task, n_prompts, n_points, seed, device)
    weights = torch.cat(
        [
            query_gradients(model, xs[i : i + batch_size], ys[i : i + batch_size])
            for i in range(0, n_prompts, batch_size)
        ]
    )
    report = {
        "run": str(run_dir),
        "task": task.name,
        "k": min(2 * task.n_dims, n_points - 1),
        "n_prompts": n_prompts,
        "ridge_lam": ridge_lam,
        **against_solvers(weights, xs, ys, ridge_lam),
    }
    out = output_dir(run_dir) / "explore"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "probe.json", report)
    probe_figure(report, out / "probe.png")
    return report
