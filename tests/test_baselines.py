import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso as SkLasso
from sklearn.linear_model import Ridge as SkRidge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.tree import DecisionTreeRegressor
from xgboost import XGBRegressor

from minicl.baselines import (
    DMMSE,
    GD2NN,
    NOISELESS_FLOOR,
    BayesSparse,
    LeastSquares,
    build_baseline,
    forward_2nn,
    init_2nn,
    lasso_path,
    prefix_cross,
    prefix_gram,
    prefix_least_squares,
)
from tests.reference import bayes_sparse_slow, fit_2nn, module_2nn


def prompts(B=6, N=14, D=5, seed=0, sparse=False):
    g = torch.Generator().manual_seed(seed)
    xs, qs = torch.randn(B, N, D, generator=g), torch.randn(B, N, D, generator=g)
    w = torch.randn(B, D, generator=g)
    if sparse:
        w[:, 2:] = 0
    ys = (xs @ w.unsqueeze(-1)).squeeze(-1) + 0.1 * torch.randn(B, N, generator=g)
    return xs, ys, qs


def per_prefix(fit_predict, xs, ys, qs):
    """The slow reference: one fit per prompt and prefix, prediction 0 with no pairs."""
    X, Y, Q = (t.double().numpy() for t in (xs, ys, qs))
    out = np.zeros(Y.shape)
    for b in range(X.shape[0]):
        for i in range(1, X.shape[1]):
            out[b, i] = fit_predict(X[b, :i], Y[b, :i], Q[b, i : i + 1])
    return torch.from_numpy(out).float()


REFERENCES = {
    "least_squares": ({}, lambda X, y, q: (q @ np.linalg.lstsq(X, y, rcond=None)[0])[0]),
    "ridge": ({"lam": 0.5}, lambda X, y, q: SkRidge(alpha=0.5, fit_intercept=False).fit(X, y).predict(q)[0]),
    "knn": ({}, lambda X, y, q: KNeighborsRegressor(n_neighbors=min(3, len(X))).fit(X, y).predict(q)[0]),
    "averaging": ({}, lambda X, y, q: (q @ (X * y[:, None]).mean(0))[0]),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("use_queries", [False, True])
def test_closed_form_baselines_match_reference(name, use_queries):
    params, ref = REFERENCES[name]
    xs, ys, qs = prompts()
    qs = qs if use_queries else None
    got = build_baseline(name, **params)(xs, ys, qs)
    torch.testing.assert_close(got, per_prefix(ref, xs, ys, xs if qs is None else qs), rtol=1e-5, atol=1e-5)


def pinv_least_squares(xs, ys):
    """The least squares of minicl before the one-pass update, kept as the slow reference: a
    pseudo-inverse (eigendecomposition) per prefix below D points, Cholesky from D points on."""
    gram, cross = prefix_gram(xs), prefix_cross(xs, ys)
    chol, info = torch.linalg.cholesky_ex(gram)
    pivots = torch.diagonal(chol, dim1=-2, dim2=-1)
    good = (torch.arange(xs.shape[1]) >= xs.shape[-1]) & (info == 0) & (pivots.amin(-1) > 1e-4 * pivots.amax(-1))
    w = torch.cholesky_solve(
        cross.unsqueeze(-1), torch.where(good[..., None, None], chol, torch.eye(xs.shape[-1]).double())
    ).squeeze(-1)
    w[~good] = (torch.linalg.pinv(gram[~good], hermitian=True, rtol=1e-12) @ cross[~good].unsqueeze(-1)).squeeze(-1)
    return w


def least_squares_case(case: str):
    g = torch.Generator().manual_seed(3)
    xs, ys = torch.randn(32, 30, 8, generator=g), torch.randn(32, 30, generator=g)  # labels fit no linear map
    if case == "subspace":  # rank 4 of 8 throughout
        xs[..., 4:] = 0
    elif case == "duplicates":  # every point twice, so a repeat adds no direction
        xs = xs[:, :15].repeat_interleave(2, dim=1)
    elif case == "subspace_and_duplicates":
        xs[..., 5:] = 0
        xs[:, 1::3] = xs[:, ::3][:, : xs[:, 1::3].shape[1]]
    elif case == "scaled":
        xs = xs * torch.logspace(-3, 3, 32)[:, None, None]
    return xs, ys


@pytest.mark.parametrize("case", ["gaussian", "subspace", "duplicates", "subspace_and_duplicates", "scaled"])
def test_one_pass_least_squares_matches_pinv(case):
    xs, ys = least_squares_case(case)
    fast, shaky = prefix_least_squares(xs, ys)
    assert not shaky.any()  # the one-pass update itself, not its fallback, is checked here
    slow = pinv_least_squares(xs, ys)
    err = (fast - slow).norm(dim=-1) / slow.norm(dim=-1).clamp_min(1e-300)
    assert err.max() < 1e-8, (
        f"{case}: relative difference {err.max():.2e} at {divmod(err.argmax().item(), xs.shape[1])}"
    )
    torch.testing.assert_close(LeastSquares().weights(xs, ys), fast, rtol=0, atol=0)


def test_ill_conditioned_prompts_take_the_pseudo_inverse():
    xs, ys = least_squares_case("gaussian")
    xs[0, 3] = xs[0, 2] + 1e-5 * xs[0, 3]  # a new direction at 1e-5 of the point's norm
    fast, shaky = prefix_least_squares(xs, ys)
    assert shaky.tolist() == [True] + [False] * 31
    weights = LeastSquares().weights(xs, ys)
    torch.testing.assert_close(weights[0], pinv_least_squares(xs[:1], ys[:1])[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(weights[1:], fast[1:], rtol=0, atol=0)


@pytest.mark.parametrize("alpha", [1.0, 0.1, 0.01, 0.001, 0.0001])
def test_lasso_matches_sklearn(alpha):
    xs, ys, qs = prompts(B=4, N=12, D=6, sparse=True)

    def ref(X, y, q):
        return SkLasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=1_000_000).fit(X, y).predict(q)[0]

    torch.testing.assert_close(
        build_baseline("lasso", alpha=alpha)(xs, ys, qs), per_prefix(ref, xs, ys, qs), rtol=0, atol=1e-4
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_lasso_objective_never_above_sklearns(seed):
    """Where sklearn's coordinate descent stops short (it warns), the exact path must do at least as well."""
    xs, ys, _ = prompts(B=10, N=16, D=10, seed=seed, sparse=True)
    for alpha in [0.01, 0.001, 0.0001]:
        for b in range(10):
            for i in range(1, 16):
                X, y = xs[b, :i].double(), ys[b, :i].double()
                w = lasso_path((X.T @ X / i)[None], (X.T @ y / i)[None], alpha)[0]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sk = SkLasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(
                        X.numpy(), y.numpy()
                    )

                def objective(v, X=X, y=y, i=i, alpha=alpha):
                    return ((y - X @ v) ** 2).sum().item() / (2 * i) + alpha * v.abs().sum().item()

                assert objective(w) <= objective(torch.from_numpy(sk.coef_)) + 1e-12


def test_gd_2nn_matches_per_prompt_module():
    xs, ys, qs = prompts(B=2, N=6, D=3)
    xs, ys, qs = xs.double(), ys.double(), qs.double()
    model = GD2NN(hidden=8, steps=30, chunk=1)
    got = model(xs, ys, qs)
    init = init_2nn(2 * 6, 3, 8, torch.Generator().manual_seed(0), torch.float64)
    for b in range(2):
        for i in range(1, 6):
            net = fit_2nn(module_2nn(init, b * 6 + i), xs[b, :i], ys[b, :i], steps=30)
            assert got[b, i].item() == pytest.approx(net(qs[b, i]).item(), abs=1e-8)
    assert (got[:, 0] == 0).all()


def test_batched_2nn_forward_matches_module():
    p = init_2nn(3, 4, 5, torch.Generator().manual_seed(1))
    x = torch.randn(3, 7, 4)
    torch.testing.assert_close(forward_2nn(p, x)[1], module_2nn(p, 1)(x[1]).squeeze(-1))


@pytest.mark.parametrize(
    "name, params, make",
    [
        ("decision_tree", {"max_depth": 4}, lambda: DecisionTreeRegressor(max_depth=4, random_state=0)),
        ("decision_tree", {}, lambda: DecisionTreeRegressor(random_state=0)),
        # the original ran xgboost 1.x: exact trees and base_score 0.5 were its defaults
        ("xgboost", {}, lambda: XGBRegressor(tree_method="exact", base_score=0.5, random_state=0, n_jobs=1)),
    ],
)
def test_tree_baselines_match_per_prompt_fits(name, params, make):
    xs, ys, qs = prompts(B=3, N=8, D=4)
    got = build_baseline(name, n_jobs=2, **params)(xs, ys, qs)
    torch.testing.assert_close(
        got, per_prefix(lambda X, y, q: make().fit(X, y).predict(q)[0], xs, ys, qs), rtol=1e-5, atol=1e-5
    )


def test_baseline_parameter_errors():
    with pytest.raises(ValueError, match="lasso alpha must be positive, got -1"):
        build_baseline("lasso", alpha=-1)
    with pytest.raises(ValueError, match="exactly one of lam or noise_std"):
        build_baseline("ridge")
    assert build_baseline("ridge", noise_std=0.5).lam == 0.25


def numpy_dmmse(pool, noise_std, xs, ys, qs):
    """Per prompt and prefix, in float64: the posterior mean over the pool given the pairs before i."""
    W, X, Y, Q = (t.double().numpy() for t in (pool, xs, ys, qs))
    out = np.zeros(Y.shape)
    for b in range(X.shape[0]):
        for i in range(X.shape[1]):
            log_p = -((Y[b, :i, None] - X[b, :i] @ W.T) ** 2).sum(0) / (2 * noise_std**2)
            p = np.exp(log_p - log_p.max())
            out[b, i] = (p / p.sum()) @ (W @ Q[b, i])
    return torch.from_numpy(out)


@pytest.mark.parametrize("pool_size, noise_std", [(1, 0.1), (7, 0.5), (300, 0.1)])
def test_dmmse_is_the_posterior_mean_over_the_pool(pool_size, noise_std):
    xs, ys, qs = prompts(B=5, N=9, D=4)
    pool = torch.randn(pool_size, 4, generator=torch.Generator().manual_seed(1))
    got = DMMSE(pool, noise_std)(xs.double(), ys.double(), qs.double())
    torch.testing.assert_close(got, numpy_dmmse(pool, noise_std, xs, ys, qs), rtol=0, atol=1e-6)
    chunked = DMMSE(pool, noise_std, max_terms=2 * 9 * pool_size)(xs.double(), ys.double(), qs.double())
    torch.testing.assert_close(chunked, got, rtol=0, atol=1e-12)  # two prompts at a time
    if pool_size == 1:  # one task: it is known before any pair
        torch.testing.assert_close(got, (qs.double() @ pool[0].double()), rtol=0, atol=1e-12)


def test_dmmse_finds_the_pooled_task_a_prompt_was_drawn_from():
    g = torch.Generator().manual_seed(0)
    pool, xs = torch.randn(64, 5, generator=g), torch.randn(8, 12, 5, generator=g)
    ys = (xs @ pool[:8].T).diagonal(dim1=0, dim2=2).T  # prompt b uses pooled task b
    preds = build_baseline("dmmse", pool=pool)(xs, ys)
    torch.testing.assert_close(preds[:, 8:], ys[:, 8:], rtol=0, atol=1e-4)  # far fewer than d pairs suffice
    with pytest.raises(ValueError, match="noise_std must be positive"):
        DMMSE(pool, 0.0)
    with pytest.raises(ValueError, match="pool of weight vectors"):
        DMMSE(pool[0])


def sparse_prompts(B, N, D, sparsity, noise_std, w_scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs, qs = (
        torch.randn(B, N, D, generator=g, dtype=torch.float64),
        torch.randn(B, N, D, generator=g, dtype=torch.float64),
    )
    support = torch.rand(B, D, generator=g).argsort(1)[:, :sparsity]
    w = torch.zeros(B, D, dtype=torch.float64).scatter_(
        1, support, w_scale * torch.randn(B, sparsity, generator=g, dtype=torch.float64)
    )
    ys = (xs @ w.unsqueeze(-1)).squeeze(-1) + noise_std * torch.randn(B, N, generator=g, dtype=torch.float64)
    return xs, ys, qs, w


@pytest.mark.parametrize("D, sparsity, noise_std, w_scale", [(5, 2, 0.5, 1.0), (6, 3, 0.1, 2.0), (5, 1, 0.0, 1.0)])
def test_bayes_sparse_is_the_posterior_mean_by_enumeration(D, sparsity, noise_std, w_scale):
    xs, ys, qs, _ = sparse_prompts(3, 9, D, sparsity, noise_std, w_scale)
    xs[0, :, 1] = 0  # a prompt with a dim that is zero throughout: supports on it are excluded
    got = BayesSparse(sparsity, w_scale, noise_std)(xs, ys, qs)
    want = bayes_sparse_slow(xs, ys, qs, sparsity, w_scale, max(noise_std, NOISELESS_FLOOR * w_scale))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    chunked = BayesSparse(sparsity, w_scale, noise_std, max_terms=9 * math.comb(D, sparsity))(xs, ys, qs)
    torch.testing.assert_close(chunked, got, rtol=0, atol=1e-12)  # one prompt at a time


def test_noiseless_bayes_sparse_is_exact_past_the_sparsity_and_beats_lasso_below_d():
    xs, ys, qs, w = sparse_prompts(200, 11, 10, 2, 0.0, seed=1)
    preds = build_baseline("bayes_sparse", sparsity=2)(xs, ys, qs)
    truth = (qs * w.unsqueeze(1)).sum(-1)
    err = ((preds - truth) ** 2).mean(0) / 2  # normalised as the task does (sparsity * w_scale^2)
    assert err[0] == pytest.approx(1.0, abs=0.25) and err[3:].max() < 1e-10  # 3 noiseless points pin 2 nonzeros
    lasso = ((build_baseline("lasso", alpha=1e-3)(xs, ys, qs) - truth) ** 2).mean(0) / 2
    assert (err[1:5] < lasso[1:5]).all()


def test_bayes_sparse_refuses_too_many_supports_and_bad_parameters():
    with pytest.raises(ValueError, match=r"C\(30, 5\) = 142506 supports, above max_supports=5000"):
        BayesSparse(5)(torch.randn(1, 4, 30), torch.randn(1, 4))
    with pytest.raises(ValueError, match="sparsity=4 is larger than the prompts' 3 dims"):
        BayesSparse(4)(torch.randn(1, 4, 3), torch.randn(1, 4))
    with pytest.raises(ValueError, match="noise_std=-1"):
        BayesSparse(2, noise_std=-1)
