"""Evaluation settings: the prompts each one draws, one function per name (a registry, as the tasks).

A setting moves one thing away from training (where the inputs lie, the query, the scale of x or
w, label noise, ...). Fixed settings have a name (`standard`, `orthogonal_train_test`); families
take a value after their name (`scale_x_2`, `noise_0.5`), and explore's sweeps draw a family at
each swept value, so each distortion is written once. Everything is drawn from the evaluation
streams of one seed (disjoint from training).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from minicl.tasks import (
    TASKS,
    Linear,
    PromptSampler,
    SparseParity,
    Task,
    build_task,
    ill_conditioned_transforms,
    make_generators,
    registrar,
    sample_xs,
)

SHIFTS = ["random_quadrants", "orthogonal_train_test", "overlapping_train_test", "half_subspace", "skewed"]
SCALES = ["0.333", "0.5", "2", "3"]


@dataclass
class Prompts:
    xs: torch.Tensor  # (B, N, D) in-context inputs
    ys: torch.Tensor  # (B, N) their labels
    queries: torch.Tensor | None  # (B, N, D) the query for each position, None: xs itself
    targets: torch.Tensor  # (B, N) the label of each query
    task: Task  # the function class the prompts were drawn from
    clean: torch.Tensor  # (B, N) the targets without label noise


@dataclass
class Draw:
    """What a setting draws from: the run's task, the prompts' count and length, the streams."""

    task: Task
    n_prompts: int
    n_points: int
    gens: dict[str, torch.Generator]
    noise_std: float = 1.0  # the run's task.noise_std, for the noisy_linear setting
    num_tasks: int | None = None  # the run's pool of tasks, for pool_tasks
    pool_seed: int = 0

    def inputs(self, transform: torch.Tensor | None = None, n_active: int | None = None, n_points: int | None = None):
        return sample_xs(
            self.gens["inputs"],
            self.n_prompts,
            n_points or self.n_points,
            self.task.n_dims,
            n_active,
            transform=transform,
        )

    def functions(self, task=None, n_active: int | None = None):
        return (task or self.task).sample(self.gens["functions"], self.n_prompts, n_active or self.task.n_dims)

    def labelled(self, params, xs: torch.Tensor, queries: torch.Tensor | None = None, task=None) -> Prompts:
        task = task or self.task
        xs, queries = task.inputs(params, xs), queries if queries is None else task.inputs(params, queries)
        ys = task.apply(params, xs, self.gens["noise"])
        targets = ys if queries is None else task.apply(params, queries, self.gens["noise"])
        return Prompts(xs, ys, queries, targets, task, task.mean(params, xs if queries is None else queries))


SETTINGS: dict[str, Callable[[Draw], Prompts]] = {}
FAMILIES: dict[str, Callable[[Draw, float], Prompts]] = {}
setting = registrar(SETTINGS)
LEAST: dict[str, tuple[float, bool]] = {}  # family: the least value it takes, and whether that value itself is allowed


def family(name: str, least: float, inclusive: bool = False):
    LEAST[name] = (least, inclusive)
    return registrar(FAMILIES)(name)


def parse(name: str) -> tuple[Callable, float | None]:
    """The setting's function and its family's value; ValueError for a name no function draws."""
    if name in SETTINGS:
        return SETTINGS[name], None
    for prefix, (least, inclusive) in LEAST.items():
        if name.startswith(prefix + "_"):
            try:
                value = float(name.removeprefix(prefix + "_"))
            except ValueError:
                value = math.nan
            if value > least or (inclusive and value == least):
                return FAMILIES[prefix], value
            raise ValueError(
                f"evaluation setting {name!r} needs a value {'>=' if inclusive else '>'} {least:g}, e.g. {prefix}_2"
            )
    raise ValueError(
        f"unknown evaluation setting {name!r}; known: {sorted(SETTINGS)}, "
        + ", ".join(f"{prefix}_<value>" for prefix in FAMILIES)
    )


def setting_prompts(
    name: str,
    task,
    n_prompts: int,
    n_points: int,
    seed: int,
    device="cpu",
    noise_std: float = 1.0,
    num_tasks: int | None = None,
    pool_seed: int = 0,
) -> Prompts:
    """Prompts of one evaluation setting, seeded by `seed`. `noise_std` is the label noise of the
    noisy_linear setting (the run's task.noise_std); pool_tasks draws functions from the pool of
    `num_tasks` a run with seed `pool_seed` trained on."""
    draw_fn, value = parse(name)
    d = Draw(task, n_prompts, n_points, make_generators(seed, device, "eval"), noise_std, num_tasks, pool_seed)
    return draw_fn(d) if value is None else draw_fn(d, value)


def default_settings(task: Task, pooled: bool = False) -> list[str]:
    """The paper's settings for a task: standard, then the groups its class lists (Task.settings:
    every shift and scale for the linear classes, the linear setting for relu_2nn); a run trained on
    a finite pool of tasks also gets pool_tasks (standard's tasks are fresh)."""
    groups = {
        "shifts": SHIFTS,
        "scales": [f"scale_{axis}_{s}" for axis in ("x", "y") for s in SCALES],
        "noisy_linear": ["noisy_linear"],
        "linear": ["linear"],
        "parity": ["bits_0.25", "flip_0.1"],
        "components": [f"component_{i}" for i in range(len(getattr(task, "parts", ())))],  # a mixture's
    }
    first = ["standard", "pool_tasks"] if pooled else ["standard"]
    return [*first, *(name for group in task.settings for name in groups[group])]


# ---------------------------------------------------------------- the distortions


def random_rotation(d: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, device=gen.device))
    return q * torch.sign(torch.diagonal(r))  # Haar-distributed orthogonal matrix


def covariance_transform(eigenvalues: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """S = U diag(lam) U^T for a random rotation U, scaled so that E||z S||^2 = ||S||_F^2 = d."""
    d = eigenvalues.numel()
    u = random_rotation(d, gen)
    s = u @ torch.diag(eigenvalues.to(u)) @ u.T
    return s * math.sqrt(d) / torch.linalg.matrix_norm(s)


def skewed_eigenvalues(d: int, condition: float) -> torch.Tensor:
    """Eigenvalues of S (covariance S^2) spaced geometrically so that cond(S^2) = condition."""
    return condition ** (-0.5 * torch.arange(d) / max(d - 1, 1))


def orthogonal_queries(xs: torch.Tensor) -> torch.Tensor:
    """Query i: the part of x_i orthogonal to x_0..x_{i-1}, rescaled to the norm of x_i (needs N <= D)."""
    q, r = torch.linalg.qr(xs.transpose(1, 2))  # columns of q: Gram-Schmidt of x_0, x_1, ...
    direction = (q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)).transpose(1, 2)
    return direction * xs.norm(dim=-1, keepdim=True)


def covariance(d: Draw, eigenvalues: torch.Tensor) -> Prompts:
    params = d.functions()
    return d.labelled(params, d.inputs(covariance_transform(eigenvalues, d.gens["inputs"])))


@setting("standard")
def standard(d: Draw) -> Prompts:
    params = d.functions()
    return d.labelled(params, d.inputs())


@family("component", 0, inclusive=True)
def component(d: Draw, index: float) -> Prompts:
    """A mixture's component `index` alone (its own baselines' ground), judged on the noise-free
    value of each query: the error of estimating f, not of predicting the noisy label."""
    parts = getattr(d.task, "parts", [])
    if index != int(index) or not index < len(parts):
        raise ValueError(
            f"setting component_{index:g} needs a mixture with a component {index:g}; {d.task.name!r} has {len(parts)}"
        )
    part = parts[int(index)]
    params, xs = d.functions(part), d.inputs()
    clean = part.mean(params, xs)
    return Prompts(xs, part.apply(params, xs, d.gens["noise"]), None, clean, part, clean)


@setting("pool_tasks")
def pool_tasks(d: Draw) -> Prompts:
    if not d.num_tasks:
        raise ValueError("the pool_tasks setting needs a run trained on a finite pool of tasks (task.num_tasks)")
    sampler = PromptSampler(d.task, d.n_points, d.gens, num_tasks=d.num_tasks, pool_seed=d.pool_seed)
    xs, ys = sampler.sample(d.n_prompts)
    return Prompts(xs, ys, None, ys, d.task, ys)


@setting("linear")
def linear(d: Draw) -> Prompts:
    task = build_task("linear", n_dims=d.task.n_dims)
    return d.labelled(d.functions(task), d.inputs(), task=task)


@setting("random_quadrants")
def random_quadrants(d: Draw) -> Prompts:
    params, xs = d.functions(), d.inputs()
    orthant = torch.sign(torch.randn(d.n_prompts, 1, d.task.n_dims, generator=d.gens["inputs"], device=xs.device))
    return d.labelled(params, xs.abs() * orthant, d.inputs())


@setting("orthogonal_train_test")
def orthogonal_train_test(d: Draw) -> Prompts:
    params, xs = d.functions(), d.inputs(n_points=min(d.n_points, d.task.n_dims))
    return d.labelled(params, xs, orthogonal_queries(xs))


@setting("overlapping_train_test")
def overlapping_train_test(d: Draw) -> Prompts:
    params, xs = d.functions(), d.inputs()
    n = xs.shape[1]
    earlier = (
        torch.rand(d.n_prompts, n, generator=d.gens["inputs"], device=xs.device) * torch.arange(n, device=xs.device)
    ).long()
    queries = xs.gather(1, earlier.unsqueeze(-1).expand(-1, -1, xs.shape[2]))  # query i = x_j, j < i (x_0 at i = 0)
    return d.labelled(params, xs, queries)


@setting("half_subspace")
def half_subspace(d: Draw) -> Prompts:
    return covariance(d, (torch.arange(d.task.n_dims) < d.task.n_dims // 2).float())


@setting("skewed")
def skewed(d: Draw) -> Prompts:
    return covariance(d, 1.0 / torch.arange(1, d.task.n_dims + 1))


@setting("noisy_linear")
def noisy_linear(d: Draw) -> Prompts:
    """The original's noisy setting: the task's noiseless labels (sparse w stays sparse) plus
    N(0, noise_std^2), rescaled by sqrt(normaliser) / std(labels) over all prompts so that their
    variance is the signal's again (sqrt(d) / std for linear, as the original; sqrt(s) for sparse)."""
    if "noisy_linear" not in d.task.settings:
        noisy = sorted(name for name, cls in TASKS.items() if "noisy_linear" in cls.settings)
        raise ValueError(f"the noisy_linear setting needs one of the tasks {noisy}, not {d.task.name!r}")
    params, xs = d.functions(), d.inputs()
    assert isinstance(d.task, Linear)  # the tasks with a noisy_linear setting
    ys = Linear.apply(d.task, params, xs)  # noisy_linear's own apply would add its noise a second time
    ys = ys + d.noise_std * torch.randn(ys.shape, generator=d.gens["noise"], device=ys.device)
    ys = ys * math.sqrt(d.task.normaliser) / ys.std()
    return Prompts(xs, ys, None, ys, d.task, ys)


@family("scale_x", 0)
def scale_x(d: Draw, factor: float) -> Prompts:
    params = d.functions()
    return d.labelled(params, d.inputs(factor * torch.eye(d.task.n_dims, device=d.gens["inputs"].device)))


@family("scale_y", 0)
def scale_y(d: Draw, factor: float) -> Prompts:
    """w (and so y) scaled by `factor`."""
    if not isinstance(d.task, Linear):
        raise ValueError(f"the scale_y setting scales w, which task {d.task.name!r} has not")
    task = replace(d.task, w_scale=d.task.w_scale * factor)
    return d.labelled(d.functions(task), d.inputs(), task=task)


@family("skew", 1, inclusive=True)
def skew(d: Draw, condition: float) -> Prompts:
    """Inputs whose covariance has this condition number (eigenvalues spaced geometrically)."""
    return covariance(d, skewed_eigenvalues(d.task.n_dims, condition))


@family("kappa", 1, inclusive=True)
def kappa(d: Draw, value: float) -> Prompts:
    """Fu et al. 2024's ill-conditioned inputs: half the dims scaled by `value` in a fresh random
    basis per prompt (covariance condition number value^2), E||x||^2 = d as in standard."""
    params = d.functions()
    transforms = ill_conditioned_transforms(d.gens["inputs"], d.n_prompts, d.task.n_dims, value)
    return d.labelled(params, d.inputs() @ transforms)


@family("noise", 0, inclusive=True)
def noise(d: Draw, std: float) -> Prompts:
    """Labels with N(0, std^2) noise; `clean` keeps them without it."""
    p = standard(d)
    noisy = p.ys + std * torch.randn(p.ys.shape, generator=d.gens["noise"], device=p.ys.device)
    return Prompts(p.xs, noisy, None, noisy, p.task, p.ys)


@family("dims", 1, inclusive=True)
def dims(d: Draw, n_active: float) -> Prompts:
    """Only the first n_active coordinates of x nonzero, as early in the dims curriculum."""
    n_active = int(n_active)
    if n_active > d.task.n_dims:
        raise ValueError(f"the dims setting takes at most the task's {d.task.n_dims} dims, got {n_active}")
    params = d.functions(n_active=n_active)
    return d.labelled(params, d.inputs(n_active=n_active))


@family("bits", 0)
def bits(d: Draw, p: float) -> Prompts:
    """sparse_parity's bits with P(x_i = +1) = p (0.5 in training)."""
    if not isinstance(d.task, SparseParity):
        raise ValueError(f"the bits setting biases the bits of sparse_parity, not of {d.task.name!r}")
    task = replace(d.task, bias=p)
    return d.labelled(d.functions(task), d.inputs(), task=task)


@family("flip", 0, inclusive=True)
def flip(d: Draw, p: float) -> Prompts:
    """+-1 labels each flipped with probability p in the context; judged on the true labels."""
    if not d.task.classification or not p < 0.5:
        raise ValueError(
            f"the flip setting flips +-1 labels with a probability below 0.5, got {p:g} for {d.task.name!r}"
        )
    p0 = standard(d)
    flips = torch.rand(p0.ys.shape, generator=d.gens["noise"], device=p0.ys.device) < p
    return Prompts(p0.xs, torch.where(flips, -p0.ys, p0.ys), None, p0.ys, p0.task, p0.ys)
