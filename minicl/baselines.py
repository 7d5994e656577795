"""Classical in-context learners with the transformer's call shape.

Every baseline is a callable `baseline(xs (B, N, D), ys (B, N), queries=None) -> (B, N)`: output i
is the prediction at queries[:, i] (xs[:, i] by default) of a learner fitted on the pairs before
i only, 0 when there are none. BASELINES maps a name to a factory taking the baseline's own
parameters. The linear learners, k-NN, Lasso and the GD-trained net are batched over prompts and
prefixes in torch; sklearn trees and XGBoost fit in parallel over prompts, one thread per fit.
"""

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from minicl.model import check_prompt
from minicl.tasks import registrar


class Baseline:
    """A classical learner with the predictors' call shape (minicl.model.Predictor): __call__ checks
    the prompt once and hands `predict` the queries (xs when none are given)."""

    def __call__(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        return self.predict(xs, ys, check_prompt(xs, ys, queries))

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """(B, N): position i predicts queries[:, i] from the pairs before i (0 with none)."""
        raise NotImplementedError


BASELINES: dict[str, type[Baseline]] = {}
register = registrar(BASELINES)


def build_baseline(name: str, **params) -> Baseline:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known baselines: {sorted(BASELINES)}")
    return BASELINES[name](**params)


def prefix_gram(xs: torch.Tensor) -> torch.Tensor:
    """G_i = sum_{j < i} x_j x_j^T for every prefix i: (B, N, D, D) in float64."""
    xs = xs.double()
    outer = xs.unsqueeze(-1) * xs.unsqueeze(-2)
    return torch.cumsum(outer, dim=1) - outer  # exclusive prefix sums


def prefix_cross(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """c_i = sum_{j < i} y_j x_j for every prefix i: (B, N, D) in float64."""
    yx = ys.double().unsqueeze(-1) * xs.double()
    return torch.cumsum(yx, dim=1) - yx


def linear_predictions(w: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """queries_i . w_i for per-prefix weights w (B, N, D)."""
    return (w * queries.double()).sum(-1).to(queries.dtype)


def prefix_least_squares(xs: torch.Tensor, ys: torch.Tensor, rtol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-norm least squares weights of every prefix in one pass over the points, O(N D^2):
    w_i = pinv(X_i) y_i as (B, N, D) float64, and a (B,) mask of the prompts whose pass was
    ill-conditioned (a new direction under 1e-3 of its point's norm).

    Q holds an orthonormal basis of the points so far (a column per direction, the rest zero), w
    the solution, P the inverse Gram matrix in Q's coordinates. A point whose component r
    orthogonal to Q is above rtol of its norm adds q = r/|r| (Gram-Schmidt): the old points do
    not see q, so the new coordinate alone fits the new point exactly and P grows by one row and
    column. A point in the span (from D independent points on, or in rank-deficient prompts)
    updates w and P by recursive least squares (Sherman-Morrison)."""
    xs, ys = xs.double(), ys.double()
    n_prompts, n_points, n_dims = xs.shape
    basis = xs.new_zeros(n_prompts, n_dims, n_dims)
    inv_gram = xs.new_zeros(n_prompts, n_dims, n_dims)
    w = xs.new_zeros(n_prompts, n_dims)
    rank = torch.zeros(n_prompts, dtype=torch.long, device=xs.device)
    shaky = torch.zeros(n_prompts, dtype=torch.bool, device=xs.device)
    cols = torch.arange(n_dims, device=xs.device)
    ws = xs.new_empty(n_prompts, n_points, n_dims)
    for i in range(n_points):
        ws[:, i] = w
        x, y = xs[:, i], ys[:, i]
        a = (basis.mT @ x[..., None]).squeeze(-1)  # coordinates in the basis
        r = x - (basis @ a[..., None]).squeeze(-1)
        a = a + (basis.mT @ r[..., None]).squeeze(-1)  # orthogonalise twice: twice is enough
        r = x - (basis @ a[..., None]).squeeze(-1)
        b, size = r.norm(dim=-1), x.norm(dim=-1)
        new = (b > rtol * size) & (rank < n_dims)
        shaky |= new & (b < 1e-3 * size)
        pa = (inv_gram @ a[..., None]).squeeze(-1)
        apa = (a * pa).sum(-1)
        residual = y - (x * w).sum(-1)
        # a new direction: column c of Q is q, P gains row and column c (block inverse)
        bn = torch.where(new, b, 1.0)
        e = ((cols == rank[:, None]) & new[:, None]).double()  # (B, D) one-hot of c, 0 if not new
        q, u = r / bn[:, None], pa / bn[:, None]
        grown = (
            inv_gram
            - u[:, :, None] * e[:, None, :]
            - e[:, :, None] * u[:, None, :]
            + ((apa + 1) / bn**2)[:, None, None] * e[:, :, None] * e[:, None, :]
        )
        # a point in the span: recursive least squares in Q's coordinates
        gain = pa / (1 + apa)[:, None]
        updated = inv_gram - gain[:, :, None] * pa[:, None, :]
        step = torch.where(new[:, None], q / bn[:, None], (basis @ gain[..., None]).squeeze(-1))
        w = w + step * residual[:, None]
        basis = basis + q[:, :, None] * e[:, None, :]
        inv_gram = torch.where(new[:, None, None], grown, updated)
        rank = rank + new
    return ws, shaky


def pinv_weights(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """w_i = pinv(G_i) c_i for every prefix i, an eigendecomposition each: the safe, slow path."""
    gram, cross = prefix_gram(xs), prefix_cross(xs, ys)
    return (torch.linalg.pinv(gram, hermitian=True, rtol=1e-12) @ cross.unsqueeze(-1)).squeeze(-1)


@register("least_squares")
@dataclass
class LeastSquares(Baseline):
    """Minimum-norm least squares: w_i = pinv(X_i) y_i = pinv(X_i^T X_i) X_i^T y_i, for all
    prefixes in one pass (prefix_least_squares); the ill-conditioned prompts by pseudo-inverse."""

    def weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """w_i for every prefix i: (B, N, D) in float64."""
        w, shaky = prefix_least_squares(xs, ys)
        if shaky.any():
            w[shaky] = pinv_weights(xs[shaky], ys[shaky])
        return w

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return linear_predictions(self.weights(xs, ys), queries)


@register("ridge")
@dataclass
class Ridge(Baseline):
    """argmin ||y - Xw||^2 + lam ||w||^2; with lam = noise_std^2 (w ~ N(0, I)) the Bayes-optimal
    estimator for noisy_linear. Give lam, or noise_std to derive it."""

    lam: float | None = None
    noise_std: float | None = None

    def __post_init__(self):
        if (self.lam is None) == (self.noise_std is None):
            raise ValueError(
                f"ridge needs exactly one of lam or noise_std, got lam={self.lam} noise_std={self.noise_std}"
            )
        if self.lam is None:
            assert self.noise_std is not None  # exactly one of the two was given
            self.lam = self.noise_std**2
        if self.lam <= 0:
            raise ValueError(f"ridge lam must be positive, got {self.lam}")

    def weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """w_i for every prefix i: (B, N, D) in float64."""
        gram, cross = prefix_gram(xs), prefix_cross(xs, ys)
        eye = torch.eye(xs.shape[-1], dtype=gram.dtype, device=gram.device)
        assert self.lam is not None  # set in __post_init__
        return torch.linalg.solve(gram + self.lam * eye, cross)

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return linear_predictions(self.weights(xs, ys), queries)


@register("bayes_noise_mixture")
@dataclass
class BayesNoiseMixture(Baseline):
    """The posterior-predictive mean for y = x . w + N(0, sigma^2), w ~ N(0, I), with sigma one of
    `noise_stds` drawn with probability `weights` (default equal): ridge at lam = sigma^2 for each
    level, weighted by the level's prior times its marginal likelihood of the pairs, N(0, X X^T +
    sigma^2 I). Each prefix in one batched pass, with log det and the quadratic form from the
    d x d matrix X^T X + sigma^2 I (Woodbury)."""

    noise_stds: Any = (0.1, 2.0)
    weights: Any = None

    def __post_init__(self):
        self.noise_stds = [float(s) for s in self.noise_stds]
        self.weights = [1.0] * len(self.noise_stds) if self.weights is None else [float(w) for w in self.weights]
        if (
            not self.noise_stds
            or min(self.noise_stds) <= 0
            or len(self.weights) != len(self.noise_stds)
            or min(self.weights) < 0
            or not sum(self.weights) > 0
        ):
            raise ValueError(
                "bayes_noise_mixture needs positive noise_stds and as many non-negative weights with a positive sum, "
                f"got noise_stds={self.noise_stds} weights={self.weights}"
            )

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        gram, cross = prefix_gram(xs), prefix_cross(xs, ys)
        squares = ys.double() ** 2
        sum_sq = torch.cumsum(squares, 1) - squares  # y_<i . y_<i
        count = torch.arange(xs.shape[1], dtype=torch.float64, device=xs.device)
        eye = torch.eye(xs.shape[-1], dtype=torch.float64, device=xs.device)
        log_post, preds = [], []
        for std, weight in zip(self.noise_stds, self.weights):
            var = std**2
            chol = torch.linalg.cholesky(gram + var * eye)
            w = torch.cholesky_solve(cross.unsqueeze(-1), chol).squeeze(-1)  # ridge at lam = var
            quadratic = (sum_sq - (cross * w).sum(-1)) / var  # y^T (X X^T + var I)^-1 y
            log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1) + (count - xs.shape[-1]) * math.log(var)
            log_post.append(
                math.log(weight) - 0.5 * (quadratic + log_det) if weight > 0 else torch.full_like(quadratic, -math.inf)
            )
            preds.append((w * queries.double()).sum(-1))
        posterior = torch.softmax(torch.stack(log_post, -1), -1)
        return (posterior * torch.stack(preds, -1)).sum(-1).to(xs.dtype)


NOISELESS_STD = 0.1  # dmmse's assumed label noise for noiseless tasks: small against the unit-scale labels


@register("dmmse")
@dataclass
class DMMSE(Baseline):
    """The Bayes-optimal prediction when w is drawn uniformly from a finite pool (M, D) of weight
    vectors: the posterior mean sum_m p(m | pairs before i) x . w_m under N(0, noise_std^2) label
    noise (NOISELESS_STD for noiseless tasks). With no pairs yet it is the pool's mean prediction.
    Prompts are taken in chunks of at most `max_terms` (prompt, point, pooled task) terms."""

    pool: torch.Tensor
    noise_std: float = NOISELESS_STD
    max_terms: int = 2**24

    def __post_init__(self):
        if self.pool.ndim != 2 or len(self.pool) == 0:
            raise ValueError(f"dmmse needs a pool of weight vectors (M, D), got shape {tuple(self.pool.shape)}")
        if self.noise_std <= 0:
            raise ValueError(f"dmmse noise_std must be positive, got {self.noise_std}")

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        w = self.pool.to(xs.device, torch.float64).T  # (D, M)
        chunk = max(1, self.max_terms // (xs.shape[1] * w.shape[1]))
        out = []
        for i in range(0, len(xs), chunk):
            x, y, q = (t[i : i + chunk].double() for t in (xs, ys, queries))
            residual = (y.unsqueeze(-1) - x @ w) ** 2  # (B, N, M): each pooled task's misfit per pair
            log_posterior = -(torch.cumsum(residual, dim=1) - residual) / (2 * self.noise_std**2)  # pairs before i
            out.append((torch.softmax(log_posterior, dim=-1) * (q @ w)).sum(-1))
        return torch.cat(out).to(xs.dtype)


NOISELESS_FLOOR = 1e-5  # bayes_sparse's label noise for noiseless labels, times w_scale: the noiseless limit to ~1e-10


@register("bayes_sparse")
@dataclass
class BayesSparse(Baseline):
    """The exact posterior mean under sparse_linear's prior: the support S uniform over the
    `sparsity`-subsets of the prompt's dims (those not zero throughout it), w_S ~ N(0, w_scale^2 I),
    labels with N(0, noise_std^2) noise (noiseless: NOISELESS_FLOOR * w_scale, the limit to ~1e-10).
    Per support, ridge with lam = noise^2 / w_scale^2 gives the posterior mean of w_S, and the
    support's log evidence is c_S^T w_S / (2 noise^2) - log det(G_S + lam I) / 2 (+ terms equal for
    every S); the prediction is the evidence-weighted mean of x . w_S. All C(D, sparsity) supports,
    for every prompt and prefix at once, in chunks of at most `max_terms` (prompt, point, support)
    terms; above `max_supports` supports it refuses."""

    sparsity: int
    w_scale: float = 1.0
    noise_std: float = 0.0
    max_supports: int = 5000
    max_terms: int = 2**20

    def __post_init__(self):
        if self.sparsity < 1 or self.w_scale <= 0 or self.noise_std < 0:
            raise ValueError(
                f"bayes_sparse needs sparsity >= 1, w_scale > 0 and noise_std >= 0, got "
                f"sparsity={self.sparsity} w_scale={self.w_scale} noise_std={self.noise_std}"
            )

    def supports(self, n_dims: int, device) -> torch.Tensor:
        """Every sparsity-subset of range(n_dims): (S, sparsity)."""
        if self.sparsity > n_dims:
            raise ValueError(f"bayes_sparse sparsity={self.sparsity} is larger than the prompts' {n_dims} dims")
        count = math.comb(n_dims, self.sparsity)
        if count > self.max_supports:
            raise ValueError(
                f"bayes_sparse would sum over C({n_dims}, {self.sparsity}) = {count} supports, above "
                f"max_supports={self.max_supports} (C(20, 3) = 1140 takes seconds on a CPU)"
            )
        return torch.combinations(torch.arange(n_dims, device=device), self.sparsity)

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        support = self.supports(xs.shape[-1], xs.device)
        chunk = max(1, self.max_terms // (xs.shape[1] * len(support)))
        return torch.cat(
            [
                self.posterior_mean(xs[i : i + chunk], ys[i : i + chunk], queries[i : i + chunk], support)
                for i in range(0, len(xs), chunk)
            ]
        ).to(xs.dtype)

    def posterior_mean(self, xs, ys, queries, support):
        noise = max(self.noise_std, NOISELESS_FLOOR * self.w_scale)
        lam = (noise / self.w_scale) ** 2
        rows, cols = support[:, :, None], support[:, None, :]
        gram = prefix_gram(xs)[:, :, rows, cols]  # (B, N, S, s, s)
        cross = prefix_cross(xs, ys)[:, :, support]  # (B, N, S, s)
        chol = torch.linalg.cholesky(gram + lam * torch.eye(self.sparsity, dtype=gram.dtype, device=gram.device))
        w = torch.cholesky_solve(cross.unsqueeze(-1), chol).squeeze(-1)
        log_evidence = (cross * w).sum(-1) / (2 * noise**2) - chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        live = (xs != 0).any(1)[:, support].all(-1)  # (B, S): supports within the prompt's nonzero dims
        live |= ~live.any(-1, keepdim=True)  # fewer nonzero dims than the sparsity: every support
        log_evidence = log_evidence.masked_fill(~live[:, None, :], -math.inf)
        preds = (queries.double()[:, :, support] * w).sum(-1)  # (B, N, S)
        return (torch.softmax(log_evidence, dim=-1) * preds).sum(-1)


def prefix_problems(xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(G_i / i, c_i / i) of every prefix i (i = 0 counts as 1): the Hessian and the minus gradient
    at w = 0 of the prefix's loss (1/2i) sum_{j < i} (w . x_j - y_j)^2, in float64."""
    count = torch.arange(xs.shape[1], device=xs.device, dtype=torch.float64).clamp(min=1)
    return prefix_gram(xs) / count[:, None, None], prefix_cross(xs, ys) / count[:, None]


def gd_weights(xs: torch.Tensor, ys: torch.Tensor, lr: float | Sequence[Any], steps: Sequence[int]) -> torch.Tensor:
    """w_t after t steps of full-batch gradient descent from w = 0 on every prefix's loss
    (1/2i) sum_{j < i} (w . x_j - y_j)^2, for each t in `steps`: (len(steps), B, N, D) in float64.
    `lr` is one step size for all, one per t, or one list per t of a step size per step. In the
    eigenbasis of the prefix's Hessian H = G_i / i = V diag(lam) V^T each coordinate follows its own
    series, so any t costs the same: w_t = V diag((1 - prod_s (1 - lr_s lam)) / lam) V^T c_i / i,
    and sum_s lr_s where lam is 0."""
    hessian, gradient = prefix_problems(xs, ys)
    lam, vecs = torch.linalg.eigh(hessian)
    along = (vecs.mT @ gradient.unsqueeze(-1)).squeeze(-1)  # the gradient in the eigenbasis
    lrs = [lr] * len(steps) if isinstance(lr, (int, float)) else list(lr)
    return torch.stack([(vecs @ (gd_factor(lam, r, t) * along).unsqueeze(-1)).squeeze(-1) for r, t in zip(lrs, steps)])


def gd_factor(lam: torch.Tensor, lr, t: int) -> torch.Tensor:
    """(1 - (1 - lr lam)^t) / lam, what t GD steps multiply the gradient's part along an
    eigenvector of eigenvalue lam by; t lr in the directions no pair spans (lam about 0). `lr` is a
    step size (a float or a tensor broadcast against lam) or a list of one per step (then t is its length)."""
    flat = lam <= 1e-12 * lam[..., -1:].clamp(min=1e-300)
    safe = torch.where(flat, 1.0, lam)
    if isinstance(lr, (list, tuple)):
        kept = torch.ones_like(safe)
        for r in lr:
            kept = kept * (1 - r * safe)
        return torch.where(flat, float(sum(lr)), (1 - kept) / safe)
    return torch.where(flat, t * lr, (1 - (1 - lr * safe) ** t) / safe)


def newton_factor(s: torch.Tensor, t: int) -> torch.Tensor:
    """What t Newton-Schulz iterations from M_0 = S / ||S||_2^2 multiply X^T y's part along an
    eigenvector of S (eigenvalue s) by: I - M_t S = (I - M_0 S)^(2^t), so M_t = (1 - (1 - s^2 /
    ||S||^2)^(2^t)) / s on S's range and 0 off it. Closed form: any t costs the same."""
    top = s[..., -1:]
    flat = s <= 1e-12 * top.clamp(min=1e-300)
    safe = torch.where(flat, 1.0, s)
    shrink = torch.log1p(-((safe / torch.where(top > 0, top, 1.0)) ** 2).clamp(max=1.0))  # log(1 - s^2/top^2) <= 0
    left = torch.exp(torch.tensor(2.0, dtype=torch.float64) ** t * shrink)  # inf * -inf and 0 * -inf below: flat
    return torch.where(flat, 0.0, (1 - left) / safe)


def newton_weights(xs: torch.Tensor, ys: torch.Tensor, steps: Sequence[int]) -> torch.Tensor:
    """w_k = M_k X_i^T y_i after k Newton-Schulz iterations M_{k+1} = 2 M_k - M_k S M_k for the
    pseudo-inverse of every prefix's Gram matrix S = X_i^T X_i, from M_0 = S / ||S||_2^2 (so that
    I - M_0 S has its eigenvalues in [0, 1) on S's range: the iteration converges quadratically to
    pinv(S), and w_k to least squares' minimum-norm solution), for each k in `steps`, in closed
    form (newton_factor): (len(steps), B, N, D) in float64."""
    s, vecs = torch.linalg.eigh(prefix_gram(xs))
    along = (vecs.mT @ prefix_cross(xs, ys).unsqueeze(-1)).squeeze(-1)
    return torch.stack([(vecs @ (newton_factor(s, k) * along).unsqueeze(-1)).squeeze(-1) for k in steps])


def online_weights(xs: torch.Tensor, ys: torch.Tensor, lr: float, shrink: bool = False) -> torch.Tensor:
    """One pass of normalised online GD over the pairs in order, from w = 0: the weights before
    each pair, (B, N, D) in float64. Pair j moves w by lr (y_j - w . x_j) x_j / ||x_j||^2; with
    `shrink`, w is first scaled by j / (j + 1) (pairs counted from 0)."""
    xs, ys = xs.double(), ys.double()
    w, out = xs.new_zeros(xs.shape[0], xs.shape[2]), []
    for j in range(xs.shape[1]):
        out.append(w)
        x = xs[:, j]
        norm = (x * x).sum(-1)
        w = w * (j / (j + 1)) if shrink else w
        step = lr * (ys[:, j] - (w * x).sum(-1)) / torch.where(norm > 0, norm, 1.0)
        w = w + step.unsqueeze(-1) * x
    return torch.stack(out, 1)


@register("gd")
@dataclass
class GD(Baseline):
    """`steps` steps of full-batch gradient descent from w = 0, step size `lr` (or a step size per
    step, `lrs`, whose length is then the number of steps), on each prefix's squared loss
    (1/2i) sum_{j < i} (w . x_j - y_j)^2 (gd_weights). One step is what a linear self-attention
    layer can compute exactly (minicl.algorithms.gd_lsa); many steps at a stable lr (below 2 / the
    Hessian's largest eigenvalue) tend to least squares."""

    steps: int = 1
    lr: float = 0.1
    lrs: Sequence[float] | None = None

    def __post_init__(self):
        if self.lrs is not None:
            self.lrs = [float(r) for r in self.lrs]
            if not self.lrs or min(self.lrs) <= 0 or self.steps not in (1, len(self.lrs)):
                raise ValueError(
                    f"gd with lrs takes one positive step size per step, {len(self.lrs)} here, and steps "
                    f"left at 1 or equal to that; got lrs={self.lrs!r} steps={self.steps!r}"
                )
            self.steps = len(self.lrs)
        if not isinstance(self.steps, int) or self.steps < 0 or self.lr <= 0:
            raise ValueError(f"gd needs steps >= 0 and lr > 0, got steps={self.steps!r} lr={self.lr!r}")

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return linear_predictions(gd_weights(xs, ys, [self.lrs or self.lr], [self.steps])[0], queries)


@register("newton")
@dataclass
class Newton(Baseline):
    """`steps` Newton-Schulz iterations for the pseudo-inverse of each prefix's Gram matrix,
    predicting x . M_k X^T y (newton_weights): Fu et al. 2024's higher-order comparator; it
    converges to least squares."""

    steps: int = 1

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"newton needs steps >= 0, got {self.steps!r}")

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return linear_predictions(newton_weights(xs, ys, [self.steps])[0], queries)


@register("online_gd")
@dataclass
class OnlineGD(Baseline):
    """One pass of normalised online gradient descent over the pairs in order (online_weights),
    predicting x_i . w from the pairs before i. lr = 1 (each pair's constraint met exactly, as in
    Kaczmarz's method) is the fixed point Ding et al. 2024 find for von Oswald's construction under
    a causal mask; `shrink` scales w by j / (j + 1) before pair j, the fixed point of the same
    construction in minicl's mean-normalised causal LSA (minicl.algorithms.gd_lsa)."""

    lr: float = 1.0
    shrink: bool = False

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"online_gd needs lr > 0, got {self.lr!r}")

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return linear_predictions(online_weights(xs, ys, self.lr, self.shrink), queries)


def gd_plus_plus_predictions(
    xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor, steps: int, lr: float, gamma: float
) -> torch.Tensor:
    """GD++ (von Oswald et al. 2023) on every prefix at once, (B, N) in float64: for each of `steps`
    layers, from the layer's input, every token's y slot r moves by -(lr / i) sum_m r_m x_m . x (one
    GD step on the residuals, read off the query's slot with a minus sign) and every x, context and
    query, by -(gamma / i) sum_m x_m x_m . x, that is x <- (I - gamma S / i) x, the curvature
    correction their trained layers learn (S = X^T X of the i pairs before the query)."""
    xs, ys, queries = xs.double(), ys.double(), queries.double()
    B, N, D = xs.shape
    inside = (torch.arange(N) < torch.arange(N)[:, None]).double()  # (P, N): prefix p holds the pairs m < p
    count = inside.sum(-1).clamp(min=1)[:, None, None]
    x = xs.unsqueeze(1) * inside[..., None]  # (B, P, N, D): each prefix's pairs, zero past it
    r = ys.unsqueeze(1) * inside  # (B, P, N)
    q, out = queries.unsqueeze(2), torch.zeros(B, N, 1, dtype=torch.float64)  # (B, P, 1, D), the query's slot
    for _ in range(steps):
        scatter = x.mT @ x / count  # (B, P, D, D): S / i
        grad = (r.unsqueeze(-1) * x).sum(-2, keepdim=True) / count  # (B, P, 1, D): sum_m r_m x_m / i
        r, out = r - lr * (x * grad).sum(-1), out - lr * (q * grad).sum(-1)
        x, q = x - gamma * x @ scatter, q - gamma * q @ scatter
    return -out.squeeze(-1)


@register("gd_plus_plus")
@dataclass
class GDPlusPlus(Baseline):
    """von Oswald et al. 2023's GD++: `steps` layers, each a GD step of size `lr` on the pairs'
    residuals and a curvature correction x <- (I - gamma X^T X / i) x of every input
    (gd_plus_plus_predictions); gamma = 0 is `gd`."""

    steps: int = 1
    lr: float = 0.1
    gamma: float = 0.0

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 0 or self.lr <= 0 or self.gamma < 0:
            raise ValueError(
                f"gd_plus_plus needs steps >= 0, lr > 0 and gamma >= 0, got steps={self.steps!r} "
                f"lr={self.lr!r} gamma={self.gamma!r}"
            )

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return gd_plus_plus_predictions(xs, ys, queries, self.steps, self.lr, self.gamma).to(queries.dtype)


@register("averaging")
@dataclass
class Averaging(Baseline):
    """w_i = mean_{j < i} y_j x_j."""

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        cross = prefix_cross(xs, ys)
        count = torch.arange(xs.shape[1], device=xs.device).clamp(min=1).view(1, -1, 1)
        return linear_predictions(cross / count, queries)


@register("knn")
@dataclass
class KNN(Baseline):
    """Mean y of the k nearest earlier x (all of them while fewer than k), uniform weights."""

    k: int = 3

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"knn k must be >= 1, got {self.k}")

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        N = xs.shape[1]
        dist = torch.cdist(queries.double(), xs.double())  # (B, N queries, N points)
        later = torch.ones(N, N, dtype=torch.bool, device=xs.device).triu()  # point j >= query i
        dist = dist.masked_fill(later, math.inf)
        near, idx = dist.topk(min(self.k, N), dim=-1, largest=False)  # (B, N, k)
        valid = torch.isfinite(near)
        picked = ys.double().unsqueeze(1).expand(-1, N, -1).gather(2, idx) * valid
        return (picked.sum(-1) / valid.sum(-1).clamp(min=1)).to(xs.dtype)


def gf2_reduce(basis: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """v (B, D + 1) of 0/1 bits reduced over GF(2) by `basis` (B, D, D + 1), whose row p is 0 or has
    its first 1 at column p: afterwards v is 0 in every column that has a row."""
    v = v.clone()
    for p in range(basis.shape[1]):
        v ^= basis[:, p] * v[:, p : p + 1]
    return v


@register("gaussian_elimination")
@dataclass
class GaussianElimination(Baseline):
    """For +-1 inputs and a parity label y = prod of x over a hidden set S: over GF(2) (bit 1 for -1)
    each pair is a linear equation on S's indicator. Position i predicts the query's label when every
    parity consistent with the pairs before it agrees on the query (its bits lie in their row space),
    and 0, a fair guess, when they do not or when no parity fits the pairs. It does not use |S|."""

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        (B, N, D), bit = xs.shape, lambda t: (t < 0).to(torch.uint8)
        basis = torch.zeros(B, D, D + 1, dtype=torch.uint8, device=xs.device)
        preds, rows = [], torch.arange(B, device=xs.device)
        contradicted = torch.zeros(B, dtype=torch.bool, device=xs.device)
        for i in range(N):
            q = gf2_reduce(basis, torch.cat((bit(queries[:, i]), basis.new_zeros(B, 1)), 1))  # label bit unknown
            determined = (q[:, :D].sum(1) == 0) & ~contradicted  # the query's bits are a sum of earlier x's
            preds.append(torch.where(determined, 1.0 - 2.0 * q[:, D], 0.0))  # ... and its label their labels'
            v = gf2_reduce(basis, torch.cat((bit(xs[:, i]), bit(ys[:, i : i + 1])), 1))
            new = (v[:, :D] != 0).any(1)
            contradicted |= ~new & (v[:, D] == 1)  # 0 = 1: no parity fits the pairs
            pivot = v[:, :D].argmax(1)  # the first 1 of a new row (argmax takes the first maximum)
            basis[rows[new], pivot[new]] = v[new]
        return torch.stack(preds, 1).to(xs.dtype)


@register("lookup")
@dataclass
class Lookup(Baseline):
    """Exact lookup: the label of an earlier x equal to the query (the latest, to 1e-6 relative), 0
    (the values' mean) when the query's x has not appeared yet."""

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        N = xs.shape[1]
        dist = torch.cdist(queries.double(), xs.double())  # (B, N queries, N points)
        scale = 1e-6 * (1 + queries.double().norm(dim=-1, keepdim=True))
        earlier = torch.ones(N, N, dtype=torch.bool, device=xs.device).tril(-1)  # point j < query i
        match = (dist <= scale) & earlier
        latest = (match * torch.arange(1, N + 1, device=xs.device)).argmax(-1)  # 0 where none matches
        found = match.any(-1)
        return torch.where(found, ys.gather(1, latest), 0.0).to(xs.dtype)


def lasso_path(gram: torch.Tensor, cross: torch.Tensor, alpha: float, max_events: int | None = None) -> torch.Tensor:
    """Exact solutions of min 1/2 w^T G w - c^T w + alpha ||w||_1 for a batch of problems ((M, D, D),
    (M, D)) by the LARS-Lasso homotopy, all problems stepping together: start at w = 0 with
    lam = max |c|, follow the piecewise-linear path of solutions as lam falls, adding a coordinate
    when its correlation reaches lam and dropping one when its weight crosses zero, until lam = alpha.
    The inverse of G on the active set is updated by rank-one steps, so no event solves a system.
    With G = X^T X / n and c = X^T y / n this is sklearn's Lasso objective."""
    M, D = cross.shape
    out = torch.zeros_like(cross)
    lam, first = cross.abs().max(-1)
    todo = (lam > alpha).nonzero().squeeze(1)  # the other problems' solution is w = 0
    G, c, lam, first = gram[todo], cross[todo], lam[todo], first[todo]
    rows = torch.arange(len(todo), device=c.device)
    w = torch.zeros_like(c)
    active = torch.zeros_like(c, dtype=torch.bool)
    active[rows, first] = True
    H = torch.zeros_like(G)  # inverse of G restricted to the active set, zero elsewhere
    H[rows, first, first] = 1 / G[rows, first, first]
    tiny = 1e-10 * lam.unsqueeze(-1)  # steps this small are rounding (a just-dropped coordinate), not events
    rho = c.clone()  # correlations c - G w; |rho| = lam on the active set
    done = torch.zeros_like(lam, dtype=torch.bool)
    for _ in range(max_events or 8 * D + 16):
        if not len(todo):
            return out
        d = torch.einsum("mij,mj->mi", H, torch.where(active, torch.sign(rho), 0.0))  # path direction
        a = torch.einsum("mij,mj->mi", G, d)  # how fast each correlation moves along the path
        lam_ = lam.unsqueeze(-1)
        join = torch.stack(((lam_ - rho) / (1 - a), (lam_ + rho) / (1 + a))).nan_to_num(nan=math.inf)
        join = torch.where((join > tiny) & ~active, join, math.inf).amin(0)
        drop = torch.where(active & (-w / d > 0), -w / d, math.inf)
        step_join, j = join.min(-1)
        step_drop, k = drop.min(-1)
        ends = ~done & (lam - alpha <= torch.minimum(step_join, step_drop))
        gamma = torch.where(ends, lam - alpha, torch.minimum(step_join, step_drop))
        gamma = torch.where(done, 0.0, gamma)
        w = w + gamma.unsqueeze(-1) * d
        rho = rho - gamma.unsqueeze(-1) * a
        lam = lam - gamma
        joins = ~done & ~ends & (step_join <= step_drop)
        drops = ~done & ~ends & (step_drop < step_join)
        # add coordinate j where it joins (bordered inverse): H += u u^T / schur with u = (H g_A, -1 at j)
        g = G[rows, :, j] * active
        u = torch.einsum("mij,mj->mi", H, g)
        schur = G[rows, j, j] - (g * u).sum(-1)
        u[rows, j] = -1.0
        H += u.unsqueeze(-1) * (u * torch.where(joins, 1 / schur, 0.0).unsqueeze(-1)).unsqueeze(-2)
        active[rows, j] |= joins
        # remove coordinate k where it drops: H -= h h^T / h_kk zeroes row and column k
        h = H[rows, :, k]
        H -= h.unsqueeze(-1) * (h * torch.where(drops, 1 / H[rows, k, k], 0.0).unsqueeze(-1)).unsqueeze(-2)
        H[rows, k, :] = torch.where(drops.unsqueeze(-1), 0.0, H[rows, k, :])
        H[rows, :, k] = torch.where(drops.unsqueeze(-1), 0.0, H[rows, :, k])
        active[rows, k] &= ~drops
        w[rows, k] = torch.where(drops, 0.0, w[rows, k])
        out[todo[ends]] = w[ends]
        done |= ends
        if done.sum() > len(todo) // 4:  # compact the working set, refresh rho exactly
            keep = ~done
            todo, G, c, lam, w, active, H, tiny, done = (t[keep] for t in (todo, G, c, lam, w, active, H, tiny, done))
            rows = torch.arange(len(todo), device=c.device)
            rho = c - (G @ w.unsqueeze(-1)).squeeze(-1)
    raise RuntimeError(f"lasso path did not reach alpha={alpha} for {len(todo)} problems")


@register("lasso")
@dataclass
class Lasso(Baseline):
    """sklearn's Lasso objective (1/2n) ||y - Xw||^2 + alpha ||w||_1, no intercept, on every prefix,
    solved exactly (LARS-Lasso homotopy) for all prompts and prefixes at once."""

    alpha: float = 0.1

    def __post_init__(self):
        if self.alpha <= 0:
            raise ValueError(f"lasso alpha must be positive, got {self.alpha}")

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        B, N, D = xs.shape
        gram, cross = prefix_gram(xs), prefix_cross(xs, ys)
        n = torch.arange(N, device=xs.device, dtype=gram.dtype).clamp(min=1)
        gram, cross = gram / n.view(1, N, 1, 1), cross / n.view(1, N, 1)
        w = lasso_path(gram.reshape(-1, D, D), cross.reshape(-1, D), self.alpha)
        return linear_predictions(w.view(B, N, D), queries)


def init_2nn(
    n_nets: int, n_dims: int, hidden: int, gen: torch.Generator, dtype=torch.float32
) -> dict[str, torch.Tensor]:
    """Weights of n_nets nets Linear(D, H) -> ReLU -> Linear(H, 1), drawn as nn.Linear draws them."""

    def uniform(*shape, fan_in):
        bound = 1 / math.sqrt(fan_in)
        return (torch.rand(*shape, generator=gen, device=gen.device, dtype=dtype) * 2 - 1) * bound

    return {
        "w1": uniform(n_nets, n_dims, hidden, fan_in=n_dims),
        "b1": uniform(n_nets, hidden, fan_in=n_dims),
        "w2": uniform(n_nets, hidden, fan_in=hidden),
        "b2": uniform(n_nets, fan_in=hidden),
    }


def forward_2nn(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x (M, P, D) through M nets -> (M, P)."""
    hidden = torch.relu(x @ p["w1"] + p["b1"].unsqueeze(1))  # (M, P, H)
    return (hidden @ p["w2"].unsqueeze(-1)).squeeze(-1) + p["b2"].unsqueeze(-1)


@register("gd_2nn")
@dataclass
class GD2NN(Baseline):
    """A 2-layer ReLU net fitted on each prefix by full-batch Adam: one net per (prompt, prefix),
    all trained at once as batched tensors."""

    hidden: int = 100
    lr: float = 5e-3
    steps: int = 100
    seed: int = 0
    chunk: int = 8  # prompts per batch of nets (memory: chunk * N^2 * hidden floats)

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        B, N, D = xs.shape
        gen = torch.Generator(device=xs.device).manual_seed(self.seed)
        params = init_2nn(B * N, D, self.hidden, gen, xs.dtype)
        return torch.cat(
            [
                self.fit_predict(
                    {k: v[b * N : (b + self.chunk) * N] for k, v in params.items()},
                    xs[b : b + self.chunk],
                    ys[b : b + self.chunk],
                    queries[b : b + self.chunk],
                )
                for b in range(0, B, self.chunk)
            ]
        )

    @torch.enable_grad()
    def fit_predict(self, params, xs, ys, queries):
        B, N, D = xs.shape
        params = {k: v.clone().requires_grad_() for k, v in params.items()}
        opt = torch.optim.Adam(params.values(), lr=self.lr)
        data = xs.repeat_interleave(N, dim=0)  # (B*N nets, N points, D): net (b, i) sees prompt b
        targets = ys.repeat_interleave(N, dim=0)
        mask = torch.ones(N, N, device=xs.device).tril(-1).repeat(B, 1)  # net i trains on points < i
        count = mask.sum(-1).clamp(min=1)
        for _ in range(self.steps):
            loss = (((forward_2nn(params, data) - targets) ** 2 * mask).sum(-1) / count).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            preds = forward_2nn(params, queries.reshape(B * N, 1, D)).view(B, N)
        preds[:, 0] = 0.0
        return preds


def _fit_trees(make, xs: np.ndarray, ys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Fit make() on every prefix of every prompt in a chunk; (b, N) predictions."""
    out = np.zeros(ys.shape)
    for b in range(xs.shape[0]):
        for i in range(1, xs.shape[1]):
            out[b, i] = make().fit(xs[b, :i], ys[b, :i]).predict(queries[b, i : i + 1])[0]
    return out


def parallel_prefix_fits(make, xs, ys, queries, n_jobs: int | None) -> torch.Tensor:
    """_fit_trees over chunks of prompts in worker processes, one thread per fit."""
    from joblib import Parallel, delayed  # deferred, as sklearn and xgboost: loaded only by the tree baselines

    n_jobs = n_jobs or os.cpu_count() or 1
    arrays = [t.detach().cpu().double().numpy() for t in (xs, ys, queries)]
    chunks = np.array_split(np.arange(xs.shape[0]), max(1, min(xs.shape[0], 8 * n_jobs)))
    parts = Parallel(n_jobs=n_jobs)(delayed(_fit_trees)(make, *(a[c] for a in arrays)) for c in chunks if len(c))
    return torch.from_numpy(np.concatenate(parts)).to(xs.device, xs.dtype)


@register("decision_tree")
@dataclass
class DecisionTree(Baseline):
    """sklearn's greedy regression tree (max_depth None: grown until pure), seeded."""

    max_depth: int | None = None
    seed: int = 0
    n_jobs: int | None = None

    def make(self):
        from sklearn.tree import DecisionTreeRegressor  # deferred: sklearn loads only when trees are fitted

        return DecisionTreeRegressor(max_depth=self.max_depth, random_state=self.seed)

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return parallel_prefix_fits(self.make, xs, ys, queries, self.n_jobs)


@register("xgboost")
@dataclass
class XGBoost(Baseline):
    """XGBoost's regressor with its defaults as the paper ran them (xgboost 1.x), one thread per
    fit: tree_method='exact', what 'auto' chose for data this small before 2.0, and base_score=0.5,
    the 1.x default (2.0 and later estimate it from the labels)."""

    tree_method: str = "exact"
    base_score: float = 0.5
    seed: int = 0
    n_jobs: int | None = None

    def make(self):
        from xgboost import XGBRegressor  # deferred: xgboost loads only when it is fitted

        return XGBRegressor(tree_method=self.tree_method, base_score=self.base_score, random_state=self.seed, n_jobs=1)

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return parallel_prefix_fits(self.make, xs, ys, queries, self.n_jobs)
