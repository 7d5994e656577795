import math
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from minicl.tasks import TASKS, PromptSampler, build_task, curriculum_at, make_generators, sample_xs


def sample(name, batch=8, n_points=16, n_dims=6, n_active=None, seed=0, **params):
    task = build_task(name, n_dims=n_dims, **params)
    gens = make_generators(seed)
    fparams = task.sample(gens["functions"], batch, n_active or n_dims)
    xs = sample_xs(gens["inputs"], batch, n_points, n_dims, n_active)
    return task, fparams, xs, task.apply(fparams, xs, gens["noise"])


def reference(name, task, p, xs):
    """Slow per-prompt, per-point definitions of the paper's function classes (docs/design.md)."""
    out = np.zeros(xs.shape[:2])
    for b in range(xs.shape[0]):
        for i in range(xs.shape[1]):
            x = xs[b, i].double().numpy()
            if name in ("linear", "sparse_linear"):
                out[b, i] = x @ p["w"][b].double().numpy()
            elif name == "quadratic":
                out[b, i] = (x * x) @ p["w"][b].double().numpy() / math.sqrt(3)
            elif name == "linear_classification":
                out[b, i] = np.sign(x @ p["w"][b].double().numpy())
            elif name == "relu_2nn":
                h = np.maximum(x @ p["w1"][b].double().numpy(), 0)
                out[b, i] = math.sqrt(2 / task.hidden) * h @ p["w2"][b].double().numpy()
            elif name == "decision_tree":
                node = 0
                for _ in range(task.depth):
                    node = 2 * node + (2 if x[int(p["coords"][b, node])] > 0 else 1)
                out[b, i] = p["leaves"][b, node - (2**task.depth - 1)].item()
    return torch.from_numpy(out).float()


@pytest.mark.parametrize(
    "name", ["linear", "sparse_linear", "quadratic", "linear_classification", "relu_2nn", "decision_tree"]
)
def test_function_class_matches_per_prompt_reference(name):
    task, p, xs, ys = sample(name)
    torch.testing.assert_close(ys, reference(name, task, p, xs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["linear", "sparse_linear", "quadratic", "relu_2nn", "decision_tree"])
def test_normaliser_is_the_variance_of_f(name):
    task, _, _, ys = sample(name, batch=4000, n_points=50, n_dims=10, seed=1)
    assert ys.pow(2).mean().item() == pytest.approx(task.normaliser, rel=0.06)


def test_noisy_linear_adds_noise_from_its_own_stream():
    _, p, xs, clean = sample("linear", batch=2000, n_points=20)
    task, p2, xs2, noisy = sample("noisy_linear", batch=2000, n_points=20, noise_std=0.5)
    torch.testing.assert_close(xs, xs2)  # changing the noise moves neither inputs nor functions
    torch.testing.assert_close(p["w"], p2["w"])
    assert (noisy - clean).std().item() == pytest.approx(0.5, rel=0.03)
    assert task.normaliser == 6


def test_sparse_support_lies_in_active_dims():
    _, p, xs, _ = sample("sparse_linear", batch=500, n_dims=10, n_active=5, sparsity=3)
    nz = p["w"] != 0
    assert (nz.sum(1) == 3).all() and not nz[:, 5:].any()
    assert (xs[..., 5:] == 0).all() and (xs[..., :5] != 0).all()
    assert nz[:, :5].float().mean(0).min() > 0.45  # support uniform over the 5 active dims: 3/5 each


def test_decision_tree_split_coords_are_the_originals_or_the_active_ones():
    # the original: dt_tensor = torch.randint(0, n_dims, ...) over all dims, whatever the curriculum
    _, p, xs, ys = sample("decision_tree", batch=200, n_dims=10, n_active=3)
    assert p["coords"].shape == (200, 15) and set(p["coords"].unique().tolist()) == set(range(10))
    root_tests_zeroed = p["coords"][:, 0] >= 3  # x is 0 there, so every point goes left at the root
    leaves_on_left = p["leaves"][:, :8]
    assert root_tests_zeroed.any()
    assert all(set(ys[b].tolist()) <= set(leaves_on_left[b].tolist()) for b in root_tests_zeroed.nonzero().flatten())
    _, p, _, _ = sample("decision_tree", batch=200, n_dims=10, n_active=3, split_dims="active")
    assert p["coords"].max() < 3
    with pytest.raises(ValueError, match=r"split_dims must be one of \('all', 'active'\), got 'some'"):
        build_task("decision_tree", n_dims=4, split_dims="some")


def test_bad_task_parameters():
    with pytest.raises(ValueError, match="unknown task 'cubic'"):
        build_task("cubic", n_dims=5)
    with pytest.raises(ValueError, match="sparsity=7 must be in 1..n_dims=5"):
        build_task("sparse_linear", n_dims=5, sparsity=7)
    task = build_task("sparse_linear", n_dims=10, sparsity=4)
    with pytest.raises(ValueError, match="sparsity=4 is larger than the 3 active dims"):
        task.sample(make_generators(0)["functions"], 2, 3)


def test_every_class_the_mixture_and_the_tables_prior_registered():
    assert set(TASKS) == {
        "sparse_parity",
        "retrieval",
        "mixture",
        "tables",
        "linear",
        "sparse_linear",
        "linear_classification",
        "noisy_linear",
        "quadratic",
        "relu_2nn",
        "decision_tree",
    }


def test_generators_are_seeded_and_independent():
    a, b, c = make_generators(0), make_generators(0), make_generators(1)
    draws = {k: torch.randn(3, generator=g) for k, g in a.items()}
    assert all(torch.equal(draws[k], torch.randn(3, generator=b[k])) for k in draws)
    assert not torch.equal(draws["inputs"], draws["functions"])
    assert not torch.equal(draws["inputs"], torch.randn(3, generator=c["inputs"]))
    ev = make_generators(0, purpose="eval")
    assert not torch.equal(
        torch.randn(3, generator=make_generators(0)["inputs"]), torch.randn(3, generator=ev["inputs"])
    )


def test_curriculum_at_chosen_steps():
    cur = NS(dims=NS(start=5, end=20, inc=1, interval=2000), points=NS(start=11, end=41, inc=2, interval=2000))
    assert curriculum_at(cur, 0) == (5, 11)
    assert curriculum_at(cur, 1999) == (5, 11)
    assert curriculum_at(cur, 2000) == (6, 13)
    assert curriculum_at(cur, 29_999) == (19, 39)
    assert curriculum_at(cur, 30_000) == (20, 41)
    assert curriculum_at(cur, 500_000) == (20, 41)
    assert curriculum_at(cur, 0, enabled=False) == (20, 41)


def test_sampler_state_round_trip_and_shapes():
    task = build_task("linear", n_dims=6)
    s = PromptSampler(task, 12, make_generators(3))
    state = {k: v.clone() for k, v in s.state_dict().items()}
    xs, ys = s.sample(4, n_active=3)
    assert xs.shape == (4, 12, 6) and ys.shape == (4, 12) and (xs[..., 3:] == 0).all()
    s.load_state_dict(state)
    xs2, ys2 = s.sample(4, n_active=3)
    assert torch.equal(xs, xs2) and torch.equal(ys, ys2)


def test_finite_pools():
    task = build_task("linear", n_dims=4)
    s = PromptSampler(task, 5, make_generators(0), num_tasks=3)
    xs, ys = s.sample(64)
    w = torch.linalg.lstsq(xs, ys.unsqueeze(-1)).solution.squeeze(-1)  # recover each prompt's function
    assert len(torch.unique(w.round(decimals=3), dim=0)) == 3
    s = PromptSampler(task, 5, make_generators(0), num_training_examples=2)
    xs, _ = s.sample(32)
    assert len(torch.unique(xs, dim=0)) == 2
    with pytest.raises(ValueError, match="must be positive, got 0"):
        PromptSampler(task, 5, make_generators(0), num_tasks=0)


def test_a_pool_of_sparse_tasks_draws_supports_over_the_active_dims_per_batch():
    # the original pools dense w (LinearRegression.generate_pool_dict) and SparseLinearRegression
    # zeroes all but `sparsity` of the first valid_coords (the curriculum's dims) for each batch
    task = build_task("sparse_linear", n_dims=10, sparsity=2)
    s = PromptSampler(task, 12, make_generators(0), num_tasks=4)
    pool = s.function_pool["w"]
    assert pool.shape == (4, 10) and (pool != 0).all()
    supports = set()
    for _ in range(5):
        xs, ys = s.sample(16, n_active=3)
        w = torch.linalg.lstsq(xs[..., :3], ys.unsqueeze(-1)).solution.squeeze(-1)  # each prompt's w on the active dims
        nonzero = w.abs() > 1e-4
        assert (nonzero.sum(1) == 2).all()
        matches = [(w[b][nonzero[b]] - pool[:, :3][:, nonzero[b]]).abs().amax(1).min() for b in range(16)]
        assert max(matches) < 1e-4  # its values are one pooled w's on its support
        supports |= {tuple(row.tolist()) for row in nonzero}
    assert len(supports) == 3  # all three 2-of-3 supports turn up
