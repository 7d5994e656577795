"""Function classes, input distributions, the curriculum and the batched prompt sampler.

Everything is sampled in batches on the generator's device from explicit torch.Generators:
one stream for inputs, one for functions and one for label noise, so one can change without
moving the others.
"""

import math
from dataclasses import dataclass, fields
from statistics import NormalDist
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch

Params = dict[str, torch.Tensor]  # per-prompt function parameters, batch first

STREAMS = ("inputs", "functions", "noise")
PURPOSES = {"train": 0, "eval": 1, "pool": 2}


def make_generators(
    seed: int, device: torch.device | str = "cpu", purpose: str = "train"
) -> dict[str, torch.Generator]:
    """One generator per stream; seeds come from a SeedSequence so no two streams or purposes collide."""
    children = np.random.SeedSequence([seed, PURPOSES[purpose]]).spawn(len(STREAMS))
    gens = {}
    for name, child in zip(STREAMS, children):
        g = torch.Generator(device=device)
        g.manual_seed(int(child.generate_state(1, dtype=np.uint64)[0]))
        gens[name] = g
    return gens


def sample_xs(
    gen: torch.Generator,
    batch: int,
    n_points: int,
    n_dims: int,
    n_active: int | None = None,
    transform: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """x = z @ transform + bias with z ~ N(0, I); coordinates from n_active on are zero. (B, N, D)"""
    xs = torch.randn(batch, n_points, n_dims, generator=gen, device=gen.device)
    if transform is not None:
        xs = xs @ transform.to(xs)
    if bias is not None:
        xs = xs + bias.to(xs)
    if n_active is not None and n_active < n_dims:
        xs[..., n_active:] = 0
    return xs


# ---------------------------------------------------------------- function classes


def registrar(table: dict[str, Any]):
    """A decorator factory: @register("name") stores the class in `table` and sets cls.name."""

    def register(name: str):
        def add(cls):
            cls.name = name
            table[name] = cls
            return cls

        return add

    return register


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, device=gen.device)


@dataclass
class Task:
    """A function class: what every registered task declares. Its dataclass fields are its config
    (conf/task/<name>.yaml, checked by a schema of its own); its checks live in __post_init__ and
    check_active_dims."""

    n_dims: int
    name: ClassVar[str]  # set by @register
    classification: ClassVar[bool] = False  # sign labels: logistic loss in training, accuracy in evaluation
    # groups of evaluation settings the task is judged on beside standard (minicl.settings.default_settings)
    settings: ClassVar[tuple[str, ...]] = ()
    # a finite pool of its functions is a pool of w with y = x . w (+ noise): dmmse is its Bayes predictor
    linear_pool: ClassVar[bool] = False

    def sample(self, gen: torch.Generator, batch: int, n_active: int) -> Params:
        """Parameters of `batch` functions, drawn from `gen`."""
        raise NotImplementedError

    def apply(self, params: Params, xs: torch.Tensor, noise_gen: torch.Generator | None = None) -> torch.Tensor:
        """f(xs) (B, N) for each prompt's function."""
        raise NotImplementedError

    def inputs(self, params: Params, xs: torch.Tensor) -> torch.Tensor:
        """The prompts' inputs, given x ~ N(0, I) (B, N, D) with the inactive dims zeroed: as they
        are, unless the task shapes its own (tables)."""
        return xs

    def mean(self, params: Params, xs: torch.Tensor) -> torch.Tensor:
        """f(xs) (B, N) without label noise (a noisy task overrides it)."""
        return self.apply(params, xs)

    @property
    def normaliser(self) -> float:
        """Error of the trivial predictor 0 (the variance of f(x)), used to normalise squared error."""
        raise NotImplementedError

    def check_active_dims(self, n_active: int) -> None:
        """Raise ValueError if functions cannot be drawn over `n_active` active dims (the fewest the
        curriculum starts with)."""


TASKS: dict[str, type[Task]] = {}
register = registrar(TASKS)


def ill_conditioned_transforms(gen: torch.Generator, batch: int, n_dims: int, kappa: float) -> torch.Tensor:
    """Fu et al. 2024's ill-conditioned inputs, x = z S for z ~ N(0, I): per prompt S = U diag(s) U^T
    with U a fresh random rotation and s = kappa on the first half of the dims (n_dims // 2), 1 on
    the rest, scaled so that E||x||^2 = n_dims; the covariance's condition number is kappa^2. (B, D, D)"""
    q, r = torch.linalg.qr(_randn(gen, batch, n_dims, n_dims))
    u = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar-distributed rotations
    s = torch.where(torch.arange(n_dims, device=u.device) < n_dims // 2, kappa, 1.0)
    s = s * math.sqrt(n_dims / (s**2).sum())
    return u @ torch.diag_embed(s.expand(batch, -1)) @ u.mT


@register("linear")
@dataclass
class Linear(Task):
    """f(x) = x . w, w ~ N(0, w_scale^2 I). With kappa > 1 the inputs are Fu et al. 2024's
    ill-conditioned ones (ill_conditioned_transforms, a rotation per prompt drawn with its w)."""

    w_scale: float = 1.0
    kappa: float = 1.0  # half the dims scaled by kappa in a random basis per prompt; 1: isotropic (draws nothing)
    settings: ClassVar[tuple[str, ...]] = ("shifts", "scales", "noisy_linear")
    linear_pool = True

    def __post_init__(self):
        if not self.kappa >= 1:
            raise ValueError(f"task.kappa must be >= 1 (1: isotropic inputs), got {self.kappa!r}")

    def sample(self, gen: torch.Generator, batch: int, n_active: int) -> Params:
        params = {"w": _randn(gen, batch, self.n_dims) * self.w_scale}
        if self.kappa != 1:
            params["transform"] = ill_conditioned_transforms(gen, batch, self.n_dims, self.kappa)
        return params

    def inputs(self, params: Params, xs: torch.Tensor) -> torch.Tensor:
        return xs @ params["transform"] if "transform" in params else xs

    def apply(self, params: Params, xs: torch.Tensor, noise_gen: torch.Generator | None = None) -> torch.Tensor:
        return (xs @ params["w"].unsqueeze(-1)).squeeze(-1)

    @property
    def normaliser(self) -> float:
        return self.n_dims * self.w_scale**2


@register("sparse_linear")
@dataclass
class SparseLinear(Linear):
    """Linear with all but `sparsity` coordinates of w zeroed; the support is uniform over the active dims."""

    sparsity: int = 3
    linear_pool = False  # a pool holds dense w, each batch draws its supports

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.sparsity <= self.n_dims:
            raise ValueError(f"sparsity={self.sparsity} must be in 1..n_dims={self.n_dims}")

    def check_active_dims(self, n_active: int) -> None:
        if self.sparsity > n_active:
            raise ValueError(
                f"task.sparsity={self.sparsity} is above the {n_active} active dims the curriculum starts with"
            )

    def sample(self, gen: torch.Generator, batch: int, n_active: int) -> Params:
        return self.with_support(super().sample(gen, batch, n_active), gen, n_active)

    def with_support(self, params: Params, gen: torch.Generator, n_active: int) -> Params:
        """w with all but `sparsity` coordinates zeroed, the support drawn uniformly over the active
        dims. A finite pool keeps dense w and draws a support per batch, as the original does."""
        if self.sparsity > n_active:
            raise ValueError(f"sparsity={self.sparsity} is larger than the {n_active} active dims")
        w = params["w"]
        support = torch.rand(w.shape[0], n_active, generator=gen, device=gen.device).argsort(dim=1)[:, : self.sparsity]
        mask = torch.zeros_like(w).scatter_(1, support, 1.0)
        return {**params, "w": w * mask}

    @property
    def normaliser(self) -> float:
        return self.sparsity * self.w_scale**2


@register("noisy_linear")
@dataclass
class NoisyLinear(Linear):
    """f(x) = x . w + eps, eps ~ N(0, noise_std^2) from the noise stream. With noise_max > 0 each
    prompt's std is instead uniform in [0, noise_max], drawn with its w (Vladymyrov et al. 2024's
    training distribution)."""

    noise_std: float = 1.0
    noise_max: float = 0.0  # 0: every prompt's std is noise_std

    def __post_init__(self):
        super().__post_init__()
        if self.noise_std < 0 or self.noise_max < 0:
            raise ValueError(f"task.noise_std and task.noise_max must be >= 0, got {self.noise_std}, {self.noise_max}")

    def sample(self, gen: torch.Generator, batch: int, n_active: int) -> Params:
        params = super().sample(gen, batch, n_active)
        if self.noise_max > 0:
            params["noise_std"] = self.noise_max * torch.rand(batch, generator=gen, device=gen.device)
        return params

    def apply(self, params: Params, xs: torch.Tensor, noise_gen: torch.Generator | None = None) -> torch.Tensor:
        ys = super().apply(params, xs)
        if noise_gen is None:
            raise ValueError("noisy_linear needs the noise generator")
        std = params["noise_std"].unsqueeze(-1) if "noise_std" in params else self.noise_std
        return ys + std * torch.randn(ys.shape, generator=noise_gen, device=noise_gen.device)

    def mean(self, params: Params, xs: torch.Tensor) -> torch.Tensor:
        return super().apply(params, xs)


@register("quadratic")
@dataclass
class Quadratic(Linear):
    """f(x) = (x * x) . w / sqrt(3)."""

    settings = ("shifts", "scales")
    linear_pool = False

    def apply(self, params: Params, xs: torch.Tensor, noise_gen: torch.Generator | None = None) -> torch.Tensor:
        return super().apply(params, xs * xs) / math.sqrt(3)


@register("linear_classification")
@dataclass
class LinearClassification(Linear):
    """f(x) = sign(x . w); trained with the logistic loss, measured by accuracy."""

    classification = True
    settings = ("shifts", "scales")
    linear_pool = False

    def apply(self, params: Params, xs: torch.Tensor, noise_gen: torch.Generator | None = None) -> torch.Tensor:
        return torch.sign(super().apply(params, xs))

    @property
    def normaliser(self) -> float:
        return 1.0


@register("relu_2nn")
@dataclass
class Relu2NN(Task):
    """f(x) = sqrt(2 / hidden) * relu(x W1) W2 with W1, W2 ~ N(0, 1)."""

    hidden: int = 100
    settings = ("linear",)

    def sample(self, gen: torch.Generator, batch: int, n_active: int) -> Params:
        return {"w1": _randn(gen, batch, self.n_dims, self.hidden), "w2": _randn(gen, batch, self.hidden)}

    def apply(self, params: Params, xs: torch.Tensor, noise_gen: torch.Generator | None = None) -> torch.Tensor:
        hidden = torch.relu(xs @ params["w1"])  # (B, N, H)
        return math.sqrt(2 / self.hidden) * (hidden @ params["w2"].unsqueeze(-1)).squeeze(-1)

    @property
    def normaliser(self) -> float:
        return float(self.n_dims)


SplitDims = Literal["all", "active"]


@register("decision_tree")
@dataclass
class DecisionTree(Task):
    """Full binary tree of `depth`: inner node j tests coordinate coords[j] and goes right when
    x[coord] > 0; nodes are numbered heap-style, leaves hold N(0, 1) values. The coordinates are
    uniform over all dims, as in the original (early in the curriculum most splits then test a
    zeroed coordinate and go left); split_dims="active" draws them from the active dims only."""

    depth: int = 4
    split_dims: SplitDims = "all"

    def __post_init__(self):
        if self.split_dims not in get_args(SplitDims):
            raise ValueError(f"split_dims must be one of {get_args(SplitDims)}, got {self.split_dims!r}")

    def sample(self, gen: torch.Generator, batch: int, n_active: int) -> Params:
        n_inner = 2**self.depth - 1
        high = n_active if self.split_dims == "active" else self.n_dims
        coords = torch.randint(0, high, (batch, n_inner), generator=gen, device=gen.device)
        return {"coords": coords, "leaves": _randn(gen, batch, n_inner + 1)}

    def apply(self, params: Params, xs: torch.Tensor, noise_gen: torch.Generator | None = None) -> torch.Tensor:
        node = torch.zeros(xs.shape[:2], dtype=torch.long, device=xs.device)  # (B, N), all prompts at once
        for _ in range(self.depth):
            coord = params["coords"].gather(1, node)  # (B, N)
            goes_right = xs.gather(2, coord.unsqueeze(-1)).squeeze(-1) > 0
            node = 2 * node + 1 + goes_right.long()
        leaf = node - (2**self.depth - 1)
        return params["leaves"].to(xs.dtype).gather(1, leaf)

    @property
    def normaliser(self) -> float:
        return 1.0


@register("sparse_parity")
@dataclass
class SparseParity(Task):
    """x uniform on {-1, +1}^n_dims (P(x_i = +1) = `bias`; coordinates past the active dims 0), y the
    product of x over `k` coordinates drawn uniformly from the active dims per prompt (Bhattamishra
    et al. 2024; Park et al. 2024 use n = 10, k = 2). Labels +-1: the logistic loss in training,
    accuracy in evaluation. The bits are the Gaussian inputs thresholded, x_i = +1 iff z_i > t."""

    k: int = 2
    bias: float = 0.5
    classification = True
    settings = ("parity",)

    def __post_init__(self):
        if not 0 < self.k <= self.n_dims:
            raise ValueError(f"task.k={self.k} must be in 1..n_dims={self.n_dims}")
        if not 0 < self.bias < 1:
            raise ValueError(f"task.bias (P(x_i = +1)) must be in (0, 1), got {self.bias!r}")

    def check_active_dims(self, n_active: int) -> None:
        if self.k > n_active:
            raise ValueError(f"task.k={self.k} is above the {n_active} active dims the curriculum starts with")

    def sample(self, gen: torch.Generator, batch: int, n_active: int) -> Params:
        self.check_active_dims(n_active)
        support = torch.rand(batch, n_active, generator=gen, device=gen.device).argsort(dim=1)[:, : self.k]
        mask = torch.zeros(batch, self.n_dims, device=gen.device).scatter_(1, support, 1.0)
        return {"support": mask}

    def inputs(self, params: Params, xs: torch.Tensor) -> torch.Tensor:
        threshold = NormalDist().inv_cdf(1 - self.bias)  # P(z > t) = bias
        return torch.where(xs > threshold, 1.0, -1.0).to(xs) * (xs != 0)

    def apply(self, params: Params, xs: torch.Tensor, noise_gen: torch.Generator | None = None) -> torch.Tensor:
        support = params["support"].to(xs).unsqueeze(1).bool()  # (B, 1, D)
        return torch.where(support, xs, 1.0).prod(-1)

    @property
    def normaliser(self) -> float:
        return 1.0


@register("retrieval")
@dataclass
class Retrieval(Task):
    """A lookup table: `keys` random keys in R^n_dims (N(0, I) over the active dims), each with a
    value ~ N(0, 1), fresh per prompt. Each x is one of the keys, drawn uniformly with repeats from
    the inputs stream (key floor(keys * Phi(z_1))), and y is its value: a query is answered exactly
    once its key has appeared earlier in the prompt, and by the values' mean 0 before."""

    keys: int = 16

    def __post_init__(self):
        if self.keys < 1:
            raise ValueError(f"task.keys must be >= 1, got {self.keys!r}")

    def sample(self, gen: torch.Generator, batch: int, n_active: int) -> Params:
        table = _randn(gen, batch, self.keys, self.n_dims)
        table[..., n_active:] = 0
        return {"table": table, "values": _randn(gen, batch, self.keys)}

    def inputs(self, params: Params, xs: torch.Tensor) -> torch.Tensor:
        index = (torch.special.ndtr(xs[..., 0].double()) * self.keys).long().clamp(max=self.keys - 1)  # (B, N)
        table = params["table"].to(xs)
        return table.gather(1, index.unsqueeze(-1).expand(-1, -1, table.shape[-1]))

    def apply(self, params: Params, xs: torch.Tensor, noise_gen: torch.Generator | None = None) -> torch.Tensor:
        index = torch.cdist(xs.double(), params["table"].double()).argmin(-1)  # the key each x is
        return params["values"].to(xs).gather(1, index)

    @property
    def normaliser(self) -> float:
        return 1.0


@register("mixture")
@dataclass
class Mixture(Task):
    """Each prompt draws one of `components` (task configs: {name: <task>, its own fields}; n_dims
    is the mixture's) with probability `weights` (default: equal; normalised). Its parameters hold
    the component of each prompt ("component") and every component's parameters ("<i>.<key>"),
    so a finite pool keeps whole prompts' functions; every component labels every prompt and each
    keeps its own (C times one task's work, for simple, fixed shapes). Regression components only."""

    components: Any = None
    weights: Any = None
    settings = ("components",)

    def __post_init__(self):
        if not self.components:
            raise ValueError("task=mixture needs at least one component in task.components")
        self.parts = [self.component(spec) for spec in self.components]
        weights = [1.0] * len(self.parts) if self.weights is None else [float(w) for w in self.weights]
        if len(weights) != len(self.parts) or min(weights) < 0 or not sum(weights) > 0:
            raise ValueError(
                f"task.weights must be {len(self.parts)} non-negative numbers with a positive sum, got {self.weights}"
            )
        self.probs = torch.tensor(weights, dtype=torch.float64) / sum(weights)

    def component(self, spec: Any) -> Task:
        spec = dict(spec)
        name = spec.pop("name", None)
        if name not in TASKS or name == "mixture":
            raise ValueError(f"a mixture component needs a name from {sorted(set(TASKS) - {'mixture'})}, got {name!r}")
        known = {f.name for f in fields(TASKS[name])} - {"n_dims"}
        if set(spec) - known or spec.pop("n_dims", self.n_dims) != self.n_dims:
            raise ValueError(f"mixture component {name!r} takes {sorted(known)} (n_dims is the mixture's), got {spec}")
        part = TASKS[name](n_dims=self.n_dims, **spec)
        if part.classification:
            raise ValueError(f"mixture components must be regression tasks; {name!r} has sign labels")
        return part

    def check_active_dims(self, n_active: int) -> None:
        for part in self.parts:
            part.check_active_dims(n_active)

    def sample(self, gen: torch.Generator, batch: int, n_active: int) -> Params:
        which = torch.multinomial(self.probs.to(gen.device), batch, replacement=True, generator=gen)
        params = {"component": which}
        for i, part in enumerate(self.parts):
            params |= {f"{i}.{key}": value for key, value in part.sample(gen, batch, n_active).items()}
        return params

    def own(self, params: Params, i: int) -> Params:
        return {key.split(".", 1)[1]: value for key, value in params.items() if key.startswith(f"{i}.")}

    def select(self, params: Params, each: list[torch.Tensor]) -> torch.Tensor:
        """Each prompt's row of its own component's labels, from every component's (B, N)."""
        which = params["component"]
        return torch.stack(each)[which, torch.arange(len(which), device=which.device)]

    def apply(self, params: Params, xs: torch.Tensor, noise_gen: torch.Generator | None = None) -> torch.Tensor:
        return self.select(
            params, [part.apply(self.own(params, i), xs, noise_gen) for i, part in enumerate(self.parts)]
        )

    def mean(self, params: Params, xs: torch.Tensor) -> torch.Tensor:
        return self.select(params, [part.mean(self.own(params, i), xs) for i, part in enumerate(self.parts)])

    @property
    def normaliser(self) -> float:
        return float(sum(p * part.normaliser for p, part in zip(self.probs.tolist(), self.parts)))


@register("tables")
@dataclass
class Tables(Task):
    """A prior over small real tables (ICLRegressor's default model is trained on it). Per prompt:
    the number of features, uniform in 1..active dims (the rest zero, as the regressor pads a
    table); each feature's shape (normal, skewed, binary or ordinal; correlated by a random mixing
    of strength up to `correlation`, and, with `factors` > 0, sharing 0 to `factors` latent factors that
    explain a share s of each feature's variance, 1 - s log-uniform in [1 - factor_share, 1], so
    features can be as collinear as real tables'); the function, linear, sparse linear (a uniform number of
    the features) or a 2-layer ReLU net of `hidden` units with biases, at odds `linear`:`sparse`:`relu`;
    and label noise of std noise x the signal's spread over the prompt, noise log-uniform in
    [noise_min, noise_max]. Trained as ICLRegressor predicts (trainer.loss_on=queries): prompts
    standardised on their context (`standardize`), queries read after it."""

    linear: float = 1.0
    sparse: float = 1.0
    relu: float = 1.0
    hidden: int = 16
    correlation: float = 1.0
    factors: int = 0
    factor_share: float = 0.98
    noise_min: float = 0.03
    noise_max: float = 3.0

    def __post_init__(self):
        odds = [self.linear, self.sparse, self.relu]
        if min(odds) < 0 or not sum(odds) > 0:
            raise ValueError(f"task.linear, sparse, relu are odds: non-negative with a positive sum, got {odds}")
        if not 0 < self.noise_min <= self.noise_max:
            raise ValueError(f"need 0 < noise_min <= noise_max, got {self.noise_min} and {self.noise_max}")
        if self.factors < 0 or not 0 <= self.factor_share < 1:
            raise ValueError(f"need factors >= 0 and 0 <= factor_share < 1, got {self.factors} and {self.factor_share}")
        self.odds = torch.tensor(odds, dtype=torch.float64) / sum(odds)

    def sample(self, gen: torch.Generator, batch: int, n_active: int) -> Params:
        D, H = self.n_dims, self.hidden

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=gen, device=gen.device)

        features = 1 + (uniform(batch) * n_active).long()  # (B,) in 1..n_active
        active = torch.arange(D, device=gen.device) < features[:, None]  # (B, D)
        used = 1 + (uniform(batch) * features).long()  # the sparse function's support size
        ranks = torch.where(active, uniform(batch, D), 2.0).argsort(1).argsort(1)
        log_noise = math.log(self.noise_min) + uniform(batch) * math.log(self.noise_max / self.noise_min)
        return self._factors(gen, batch) | {
            "active": active.float(),
            "support": (ranks < used[:, None]).float(),
            "kind": torch.multinomial(self.odds.to(gen.device), batch, replacement=True, generator=gen),
            "shape": (uniform(batch, D) * 4).long(),  # normal, skewed, binary, ordinal
            "cut": _randn(gen, batch, D) * 0.7,  # where a binary feature splits
            "mixing": _randn(gen, batch, D, D) * (self.correlation * uniform(batch, 1, 1) / math.sqrt(D)),
            "w": _randn(gen, batch, D),
            "w1": _randn(gen, batch, D, H),
            "b1": _randn(gen, batch, H),
            "w2": _randn(gen, batch, H),
            "noise": log_noise.exp(),
        }

    def _factors(self, gen: torch.Generator, batch: int) -> Params:
        """Latent factors shared by the features; none drawn (the generator untouched) when factors=0."""
        if self.factors == 0:
            return {}
        D, K = self.n_dims, self.factors
        count = (torch.rand(batch, generator=gen, device=gen.device) * (K + 1)).long()  # 0..K factors
        loadings = _randn(gen, batch, K, D) * (torch.arange(K, device=gen.device) < count[:, None]).float()[..., None]
        unique = (1 - self.factor_share) ** torch.rand(batch, generator=gen, device=gen.device)  # 1 - s
        return {
            "factor_in": _randn(gen, batch, D, K) / math.sqrt(D),  # each factor a mix of all D coordinates
            "loadings": loadings / loadings.norm(dim=1, keepdim=True).clamp_min(1e-12),  # unit norm per feature
            "share": torch.where(count > 0, 1 - unique, 0.0),
        }

    def inputs(self, params: Params, xs: torch.Tensor) -> torch.Tensor:
        active = params["active"][:, None]  # (B, 1, D)
        if "share" in params:
            share = params["share"][:, None, None].to(xs)
            shared = xs @ params["factor_in"].to(xs) @ params["loadings"].to(xs)
            xs = (1 - share).sqrt() * xs + share.sqrt() * shared
        xs = xs * active
        xs = (xs + xs @ params["mixing"].to(xs)) * active
        xs = xs / xs.std(1, keepdim=True).clamp_min(1e-6) * active  # each feature's spread 1 over the prompt
        skewed = (xs.exp() - math.exp(0.5)) / math.sqrt((math.e - 1) * math.e)
        binary = torch.where(xs > params["cut"][:, None].to(xs), 1.0, -1.0)
        ordinal = torch.round(xs * 1.5) / 1.5
        shape = params["shape"][:, None].expand_as(xs)
        warped = torch.stack((xs, skewed, binary, ordinal)).gather(0, shape[None]).squeeze(0)
        return warped * active

    def mean(self, params: Params, xs: torch.Tensor) -> torch.Tensor:
        linear = (xs @ params["w"].unsqueeze(-1)).squeeze(-1)
        sparse = (xs @ (params["w"] * params["support"]).unsqueeze(-1)).squeeze(-1)
        hidden = torch.relu(xs @ params["w1"] + params["b1"][:, None])  # (B, N, H)
        relu = math.sqrt(2 / self.hidden) * (hidden @ params["w2"].unsqueeze(-1)).squeeze(-1)
        kind = params["kind"]
        return torch.stack((linear, sparse, relu))[kind, torch.arange(len(kind), device=kind.device)]

    def apply(self, params: Params, xs: torch.Tensor, noise_gen: torch.Generator | None = None) -> torch.Tensor:
        if noise_gen is None:
            raise ValueError("tables needs the noise generator")
        f = self.mean(params, xs)
        spread = f.std(1, keepdim=True) * params["noise"][:, None]
        return f + spread * torch.randn(f.shape, generator=noise_gen, device=noise_gen.device)

    @property
    def normaliser(self) -> float:
        return 1.0  # labels are standardised on the context


NEAR_CONSTANT = 1e-6  # a column whose context spread is at most this share of its largest |value| is not scaled


def context_stats(values: torch.Tensor, n_context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and scale over the first n_context rows (dim 1) of each prompt: the spread, or 1 where it
    is at most NEAR_CONSTANT of the column's largest |value| there: a constant or zero-padded column,
    or one constant up to rounding, which is then only centred (scaled by its spread, a 1e-10 jitter
    would turn the queries' deviations into values of 1e9)."""
    context = values[:, :n_context]
    std = context.std(1, correction=0, keepdim=True)
    scale = torch.where(std > NEAR_CONSTANT * context.abs().amax(1, keepdim=True), std, 1.0)
    return context.mean(1, keepdim=True), scale


def standardize(xs: torch.Tensor, ys: torch.Tensor, n_context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts (B, N, D), (B, N) standardised on their first n_context rows, as ICLRegressor reads a
    table: each feature and the label to mean 0 and spread 1 over the context; the rows after the
    context with the same shift and scale (a column that does not vary in the context only centred)."""
    (x_mean, x_scale), (y_mean, y_scale) = context_stats(xs, n_context), context_stats(ys, n_context)
    return (xs - x_mean) / x_scale, (ys - y_mean) / y_scale


def build_task(name: str, **params) -> Task:
    """The task `name`, given the parameters its class takes (others are ignored)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    cls = TASKS[name]
    accepted = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in accepted})


# ---------------------------------------------------------------- curriculum


def schedule_value(schedule, step: int) -> int:
    """start + inc every `interval` steps, capped at end; `schedule` has start, end, inc, interval."""
    return min(schedule.end, schedule.start + schedule.inc * (step // schedule.interval))


def curriculum_at(curriculum, step: int, enabled: bool = True) -> tuple[int, int]:
    """(active dims, prompt points) at `step`; a pure function of the step, so resume is exact."""
    if not enabled:
        return curriculum.dims.end, curriculum.points.end
    return schedule_value(curriculum.dims, step), schedule_value(curriculum.points, step)


# ---------------------------------------------------------------- sampler


class PromptSampler:
    """Draws batches of prompts (xs (B, N, D), ys (B, N)) of a task on the generators' device.

    Always samples `n_points` points at the full width, with coordinates past the active dims
    zeroed, so the shapes in the training step never change. `num_tasks` fixes a pool of
    functions and `num_training_examples` a pool of prompts (inputs and functions), both drawn
    once from `pool_seed` on the CPU (the same pool on every device). A pool of sparse tasks holds
    dense w and draws each batch's supports over the active dims (as the original does); a pool
    of prompts keeps its functions whole.
    """

    def __init__(
        self,
        task,
        n_points: int,
        gens: dict[str, torch.Generator],
        num_tasks: int | None = None,
        num_training_examples: int | None = None,
        pool_seed: int = 0,
    ):
        self.task, self.n_points, self.gens = task, n_points, gens
        self.function_pool = self.input_pool = None
        self.resample_support = False
        self.pool_size = pool_size = num_training_examples or num_tasks
        if pool_size is not None:
            if pool_size <= 0:
                raise ValueError(f"num_tasks / num_training_examples must be positive, got {pool_size}")
            pool_gens, device = make_generators(pool_seed, "cpu", "pool"), gens["functions"].device
            self.resample_support = isinstance(task, SparseLinear) and num_training_examples is None
            pooled = Linear.sample if self.resample_support else type(task).sample
            pool = pooled(task, pool_gens["functions"], pool_size, task.n_dims)  # on the CPU: one pool on every device
            self.function_pool = {name: value.to(device) for name, value in pool.items()}
            if num_training_examples is not None:
                self.input_pool = sample_xs(pool_gens["inputs"], pool_size, n_points, task.n_dims).to(device)

    def sample(self, batch: int, n_active: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n_dims = self.task.n_dims
        n_active = n_dims if n_active is None else n_active
        fgen = self.gens["functions"]
        if self.function_pool is None:
            params = self.task.sample(fgen, batch, n_active)
        else:
            assert self.pool_size is not None  # a pool was drawn
            index = torch.randint(0, self.pool_size, (batch,), generator=fgen, device=fgen.device)
            params = {k: v[index] for k, v in self.function_pool.items()}
            if self.resample_support:
                params = self.task.with_support(params, fgen, n_active)
        if self.input_pool is None:
            xs = sample_xs(self.gens["inputs"], batch, self.n_points, n_dims, n_active)
        else:
            xs = self.input_pool[index]  # advanced indexing copies
            xs[..., n_active:] = 0
        xs = self.task.inputs(params, xs)
        return xs, self.task.apply(params, xs, self.gens["noise"])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: g.get_state() for name, g in self.gens.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, g in self.gens.items():
            g.set_state(state[name].cpu())
