"""The algorithm baselines (gd, newton) against plain numpy loops, and their limits."""

import numpy as np
import pytest
import torch

from minicl.algorithm_probe import GD_STEPS, LR_GRID, best_gd_lrs
from minicl.algorithms import gd_lsa, one_step_gd
from minicl.baselines import LeastSquares, build_baseline, gd_weights, newton_weights, prefix_problems
from minicl.model import ModelConfig, build_model


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


def online_loop(x: np.ndarray, y: np.ndarray, lr: float, shrink: bool = False) -> np.ndarray:
    """One pass of normalised online GD over the pairs in order, from w = 0."""
    w = np.zeros(x.shape[1])
    for j in range(len(x)):
        w = w * j / (j + 1) if shrink else w
        w = w + lr * (y[j] - w @ x[j]) * x[j] / (x[j] @ x[j])
    return w


@pytest.mark.parametrize("lr, shrink", [(1.0, False), (0.5, False), (1.0, True)])
def test_online_gd_is_one_online_pass_on_every_prefix(lr, shrink):
    xs, ys = prompts(N=9)
    preds = build_baseline("online_gd", lr=lr, shrink=shrink)(xs, ys)
    for b in range(len(xs)):
        for i in range(xs.shape[1]):
            expected = xs[b, i].numpy() @ online_loop(xs[b, :i].numpy(), ys[b, :i].numpy(), lr, shrink)
            assert abs(preds[b, i].item() - expected) <= 1e-4 * max(1.0, abs(expected))


def test_gd_takes_a_step_size_per_step():
    xs, ys = prompts()
    lrs = [0.5, 0.1, 0.3]
    preds = build_baseline("gd", lrs=lrs)(xs, ys)
    for b in range(len(xs)):
        for i in range(xs.shape[1]):
            w = np.zeros(xs.shape[2])
            x, y = xs[b, :i].numpy(), ys[b, :i].numpy()
            for lr in lrs:
                w = w - lr * x.T @ (x @ w - y) / max(len(x), 1)
            assert abs(preds[b, i].item() - xs[b, i].numpy() @ w) <= 1e-6 * max(1.0, abs(xs[b, i].numpy() @ w))
    with pytest.raises(ValueError, match="one positive step size per step"):
        build_baseline("gd", lrs=[0.1, -0.2])


def gd_plus_plus_loop(x: np.ndarray, y: np.ndarray, query: np.ndarray, steps: int, lr: float, gamma: float) -> float:
    """von Oswald et al.'s GD++ token by token: each layer, from its input, moves every y slot by
    -(lr/i) sum_m r_m x_m . x and every x by -(gamma/i) sum_m x_m x_m . x."""
    r, q, slot, i = y.copy(), query.copy(), 0.0, max(len(x), 1)
    for _ in range(steps):
        s = x.T @ x / i
        grad = x.T @ r / i
        r, slot = r - lr * x @ grad, slot - lr * q @ grad
        x, q = x - gamma * x @ s, q - gamma * q @ s
    return -slot


@pytest.mark.parametrize("steps, lr, gamma", [(1, 0.3, 0.0), (3, 0.3, 0.0), (3, 0.3, 0.05), (4, 0.2, 0.1)])
def test_gd_plus_plus_is_its_token_by_token_definition_and_gd_without_the_correction(steps, lr, gamma):
    xs, ys = prompts(N=9)
    preds = build_baseline("gd_plus_plus", steps=steps, lr=lr, gamma=gamma)(xs, ys)
    for b in range(len(xs)):
        for i in range(xs.shape[1]):
            expected = gd_plus_plus_loop(xs[b, :i].numpy(), ys[b, :i].numpy(), xs[b, i].numpy(), steps, lr, gamma)
            assert abs(preds[b, i].item() - expected) <= 1e-6 * max(1.0, abs(expected))
    if gamma == 0:
        torch.testing.assert_close(preds, build_baseline("gd", steps=steps, lr=lr)(xs, ys), rtol=1e-9, atol=1e-9)


def test_newton_at_4096_steps_is_least_squares():
    xs, ys = prompts(N=20, D=5, cond=1e4)
    torch.testing.assert_close(newton_weights(xs, ys, [4096])[0], LeastSquares().weights(xs, ys), rtol=1e-6, atol=1e-6)


def regression(B=64, N=11, D=10, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    xs, w = torch.randn(B, N, D, generator=gen, dtype=dtype), torch.randn(B, D, 1, generator=gen, dtype=dtype)
    return xs, (xs @ w).squeeze(-1)


@pytest.mark.parametrize("t", [1, 2, 3, 4])
def test_the_prefix_construction_is_t_gd_steps_at_every_prefix_length(t):
    xs, ys = regression(seed=t)
    with torch.no_grad():
        layers = gd_lsa(10, 0.3, t, mask="prefix")(xs, ys)
    steps = build_baseline("gd", steps=t, lr=0.3)(xs, ys)
    torch.testing.assert_close(layers, steps, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # a step size per layer is gd with lrs
        layers = gd_lsa(10, [0.5, 0.1, 0.3][: min(t, 3)] + [0.2] * (t - 3), t, mask="prefix")(xs, ys)
    lrs = [0.5, 0.1, 0.3][: min(t, 3)] + [0.2] * (t - 3)
    torch.testing.assert_close(layers, build_baseline("gd", lrs=lrs)(xs, ys), rtol=1e-4, atol=1e-4)


def causal_fixed_point(x: np.ndarray, y: np.ndarray, query: np.ndarray) -> float:
    """The infinite-depth limit of the causal construction, solved directly in float64: context
    slot j vanishes when (1/(j+1)) sum_{m<=j} b_m x_m . x_j = y_j, where b_m is lr times the sum of
    pair m's slots over the layers; the query reads (1/i) sum_{m<i} b_m x_m . x_q."""
    b = np.zeros(len(x))
    for j in range(len(x)):
        b[j] = ((j + 1) * y[j] - sum(b[m] * x[m] @ x[j] for m in range(j))) / (x[j] @ x[j])
    return float(sum(b[m] * x[m] @ query for m in range(len(x))) / max(len(x), 1))


def test_the_causal_construction_converges_to_minicls_online_fixed_point_and_the_prefix_one_to_least_squares():
    xs, ys = regression(B=8, N=7, D=3, seed=1, dtype=torch.float64)
    model = gd_lsa(3, 0.05, 4000, mask="causal").double()  # stable: lr ||x_j||^2 < 2 on every pair here
    with torch.no_grad():
        deep = model(xs, ys)
    reference = torch.tensor(
        [
            [causal_fixed_point(xs[b, :i].numpy(), ys[b, :i].numpy(), xs[b, i].numpy()) for i in range(7)]
            for b in range(8)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(deep, reference, rtol=1e-6, atol=1e-6)  # the fixed point, in float64
    torch.testing.assert_close(deep, build_baseline("online_gd", shrink=True)(xs, ys), rtol=1e-6, atol=1e-6)
    ding = build_baseline("online_gd")(xs, ys)  # Ding et al.'s unnormalised fixed point is another
    assert (deep - ding)[:, 2:].abs().max() > 1e-2
    exact = LeastSquares()(xs, ys)  # past d pairs least squares is exact; the causal fixed point is not
    assert (deep - exact)[:, 4:].abs().max() > 1e-2
    with torch.no_grad():  # the prefix construction converges to least squares (at its own stable step size)
        prefix = gd_lsa(3, 0.3, 4000, mask="prefix").double()(xs, ys)
    torch.testing.assert_close(prefix[:, 4:], exact[:, 4:], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("lr", [0.1, 0.45, 1.3])
def test_the_hand_built_lsa_layer_is_one_gd_step(lr):
    xs, ys = regression(seed=int(lr * 100))
    with torch.no_grad():
        layer = one_step_gd(10, lr)(xs, ys)
    step = build_baseline("gd", steps=1, lr=lr)(xs, ys)
    torch.testing.assert_close(layer, step, rtol=1e-5, atol=1e-5)
    queries = torch.randn(64, 11, 10, generator=torch.Generator().manual_seed(1))  # and at other queries, in one pass
    torch.testing.assert_close(
        one_step_gd(10, lr)(xs, ys, queries), build_baseline("gd", lr=lr)(xs, ys, queries), rtol=1e-5, atol=1e-5
    )
    with torch.no_grad():
        torch.testing.assert_close(gd_lsa(10, lr, 1, mask="prefix")(xs, ys), layer, rtol=1e-5, atol=1e-5)
