"""The algorithm baselines (gd, newton) against plain numpy loops, and their limits."""

import numpy as np
import pytest
import torch

from minicl.algorithms import GD_STEPS, LR_GRID, best_gd_lrs, one_step_gd, probe_setting
from minicl.baselines import LeastSquares, build_baseline, gd_weights, newton_weights, prefix_problems
from minicl.model import ModelConfig, build_model
from minicl.settings import setting_prompts
from minicl.tasks import build_task


def prompts(B=6, N=14, D=5, seed=0, cond=1.0):
    gen = torch.Generator().manual_seed(seed)
    scale = cond ** (-0.5 * torch.arange(D) / max(D - 1, 1))  # covariance eigenvalues from 1 to 1/cond
    xs = torch.randn(B, N, D, generator=gen, dtype=torch.float64) * scale
    w = torch.randn(B, D, generator=gen, dtype=torch.float64)
    return xs, (xs @ w.unsqueeze(-1)).squeeze(-1)


def gd_loop(x: np.ndarray, y: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """Gradient descent from 0 on (1/2i) sum (w . x_j - y_j)^2, one step at a time."""
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        w = w - lr * x.T @ (x @ w - y) / max(len(x), 1)
    return w


def newton_loop(x: np.ndarray, y: np.ndarray, steps: int) -> np.ndarray:
    """Newton-Schulz for pinv(X^T X) from M_0 = S / ||S||_2^2, then M_k X^T y."""
    s = x.T @ x
    norm = np.linalg.norm(s, 2)
    m = s / norm**2 if norm > 0 else np.zeros_like(s)
    for _ in range(steps):
        m = 2 * m - m @ s @ m
    return m @ x.T @ y


@pytest.mark.parametrize("steps, lr", [(0, 0.1), (1, 0.3), (3, 0.5), (25, 0.2)])
def test_gd_is_gradient_descent_on_every_prefix(steps, lr):
    xs, ys = prompts()
    preds = build_baseline("gd", steps=steps, lr=lr)(xs, ys)
    for b in range(len(xs)):
        for i in range(xs.shape[1]):
            x, y = xs[b, :i].numpy(), ys[b, :i].numpy()
            expected = xs[b, i].numpy() @ gd_loop(x, y, lr, steps)
            assert abs(preds[b, i].item() - expected) <= 1e-6 * max(1.0, abs(expected))


@pytest.mark.parametrize("steps", [0, 1, 2, 5, 12])
def test_newton_is_newton_schulz_on_every_prefix(steps):
    xs, ys = prompts(cond=30.0)
    preds = build_baseline("newton", steps=steps)(xs, ys)
    for b in range(len(xs)):
        for i in range(xs.shape[1]):
            x, y = xs[b, :i].numpy(), ys[b, :i].numpy()
            expected = xs[b, i].numpy() @ newton_loop(x, y, steps)
            assert abs(preds[b, i].item() - expected) <= 1e-6 * max(1.0, abs(expected))


def test_many_gd_steps_at_a_stable_rate_reach_least_squares_minimum_norm_solution():
    xs, ys = prompts(N=12, D=8)  # prefixes below 8 points are rank-deficient: the minimum norm matters
    lr = 0.5 / torch.linalg.eigvalsh(prefix_problems(xs, ys)[0]).max().item()  # stable on every prefix
    w = gd_weights(xs, ys, lr, [200_000])[0]
    torch.testing.assert_close(w, LeastSquares().weights(xs, ys), rtol=1e-6, atol=1e-6)


def test_newton_converges_to_least_squares_where_gd_lags_on_ill_conditioned_inputs():
    xs, ys = prompts(N=20, D=5, cond=1000.0)
    exact = LeastSquares().weights(xs, ys)
    torch.testing.assert_close(newton_weights(xs, ys, [60])[0], exact, rtol=1e-6, atol=1e-6)
    lr = 1.0 / torch.linalg.eigvalsh(prefix_problems(xs, ys)[0]).max().item()  # stable on every prefix
    gd = gd_weights(xs, ys, lr, [1000])[0]
    full_rank = slice(6, None)
    assert (gd - exact)[:, full_rank].norm(dim=-1).mean() > 0.1  # 1000 steps are far from converged


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="gd needs steps >= 0 and lr > 0"):
        build_baseline("gd", steps=-1)
    with pytest.raises(ValueError, match="newton needs steps >= 0"):
        build_baseline("newton", steps=1.5)


@pytest.mark.parametrize("lr", [0.1, 0.45, 1.3])
def test_the_hand_built_lsa_layer_is_one_gd_step(lr):
    gen = torch.Generator().manual_seed(int(lr * 100))
    xs, w = torch.randn(64, 11, 10, generator=gen), torch.randn(64, 10, 1, generator=gen)
    ys = (xs @ w).squeeze(-1)
    with torch.no_grad():
        layer = one_step_gd(10, lr)(xs, ys)
    step = build_baseline("gd", steps=1, lr=lr)(xs, ys)
    torch.testing.assert_close(layer, step, rtol=1e-5, atol=1e-5)
    queries = torch.randn(64, 11, 10, generator=gen)  # and at other queries, in the same pass
    torch.testing.assert_close(
        one_step_gd(10, lr)(xs, ys, queries), build_baseline("gd", lr=lr)(xs, ys, queries), rtol=1e-5, atol=1e-5
    )


def lsa_reference(model, xs, ys):
    """Linear self-attention written out token by token: context token j reads the pairs 0..j,
    query i the pairs before i, each the mean of V_h e_m (K_h e_m . Q_h e) summed over heads."""
    B, N, D = xs.shape
    context = [torch.cat((xs[:, j], ys[:, j, None]), -1) for j in range(N)]
    queries = [torch.cat((xs[:, i], torch.zeros(B, 1)), -1) for i in range(N)]

    def read(e, sources, layer):
        out = torch.zeros_like(e)
        for q, k, v in zip(layer.q, layer.k, layer.v):
            for m in sources:
                out += ((context[m] @ k.T) * (e @ q.T)).sum(-1, keepdim=True) * (context[m] @ v.T) / len(sources)
        return out

    for layer in model.layers:
        queries = [q + read(q, range(i), layer) if i else q for i, q in enumerate(queries)]
        context = [c + read(c, range(j + 1), layer) for j, c in enumerate(context)]
    return -torch.stack([q[:, -1] for q in queries], 1)


def test_lsa_equals_its_token_by_token_definition():
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_dims=4, arch="lsa", n_layer=3, n_head=2)).eval()
    xs, ys = torch.randn(3, 7, 4), torch.randn(3, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(xs, ys), lsa_reference(model, xs, ys), rtol=1e-5, atol=1e-5)


def test_the_gd_line_search_finds_the_grids_best_step_size():
    xs, ys = prompts(B=64, N=11, D=5, seed=3)
    found = best_gd_lrs(xs, ys, k=6)
    top = torch.linalg.eigvalsh(prefix_problems(xs[:, :7], ys[:, :7])[0][:, 6])[:, -1].mean().item()
    for steps, lr in zip(GD_STEPS[:4], found):
        errors = {
            scale / top: ((build_baseline("gd", steps=steps, lr=scale / top)(xs, ys) - ys)[:, 6] ** 2).mean().item()
            for scale in LR_GRID
        }
        assert lr == pytest.approx(min(errors, key=errors.get), rel=1e-9)


def test_the_probe_finds_one_gd_step_in_the_hand_built_layer():
    """The hand-built one-step-GD model at the line-searched step size: its output is gd_1 exactly
    (distance 0, cosine 1), and so is the readout of its layer, up to the readout's fit."""
    task = build_task("linear", n_dims=5)
    train = setting_prompts("standard", task, 2048, 11, seed=5)
    lrs = best_gd_lrs(train.xs, train.ys, 5)
    report = probe_setting(one_step_gd(5, lrs[0]), task, "standard", 11, 5, 512, 0, lrs=lrs)
    output, layer = report["output"], report["layers"][1]
    assert output["closest"] == "gd_1" and output["distance"]["gd_1"][5] < 1e-10
    assert output["cosine"]["gd_1"] > 1 - 1e-9
    assert output["error"] == pytest.approx(report["algorithm_error"]["gd_1"], rel=1e-6, abs=1e-9)
    assert layer["closest"] == "gd_1" and layer["distance"]["gd_1"][5] < 0.01 * output["error"][5]
    assert report["layers"][0]["error"][5] > 0.9  # the embedding (x, 0) alone says nothing of y
