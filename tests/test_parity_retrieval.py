"""sparse_parity and retrieval: the tasks against their definitions, Gaussian elimination against a
brute-force search over every parity, exact lookup against a dictionary, and their settings."""

import itertools

import numpy as np
import pytest
import torch

from minicl.baselines import build_baseline
from minicl.common import pointwise_metric
from minicl.settings import setting_prompts
from minicl.tasks import PromptSampler, build_task, make_generators


def parity_prompts(n_dims=6, n_points=12, batch=40, seed=0, **params):
    task = build_task("sparse_parity", n_dims=n_dims, **params)
    return task, *PromptSampler(task, n_points, make_generators(seed)).sample(batch)


def brute_force_parity(xs: np.ndarray, ys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Position i: the label every subset S of the coordinates with prod_{S} x_j = y_j on the pairs
    before i gives the query, 0 where two of them disagree or none fits."""
    B, N, D = xs.shape
    subsets = [s for r in range(D + 1) for s in itertools.combinations(range(D), r)]
    out = np.zeros((B, N))
    for b in range(B):
        for i in range(N):
            fits = [s for s in subsets if all(np.prod(xs[b, j, list(s)]) == ys[b, j] for j in range(i))]
            labels = {np.prod(queries[b, i, list(s)]) for s in fits}
            out[b, i] = labels.pop() if len(labels) == 1 else 0.0
    return out


def test_sparse_parity_labels_are_the_product_over_k_active_bits():
    task, xs, ys = parity_prompts(n_dims=8, k=3, batch=200)
    assert set(xs.unique().tolist()) == {-1.0, 1.0} and set(ys.unique().tolist()) == {-1.0, 1.0}
    params = task.sample(make_generators(1)["functions"], 500, 4)  # 4 active dims of 8
    support = params["support"]
    assert (support.sum(1) == 3).all() and (support[:, 4:] == 0).all()
    x = torch.where(torch.rand(500, 5, 8) < 0.5, 1.0, -1.0)
    expected = torch.stack([x[b][:, support[b].bool()].prod(-1) for b in range(500)])
    assert torch.equal(task.apply(params, x), expected)


def test_sparse_parity_bias_sets_the_share_of_plus_ones():
    _, xs, _ = parity_prompts(n_dims=10, n_points=50, batch=200, bias=0.8)
    assert abs((xs == 1).float().mean().item() - 0.8) < 0.01


@pytest.mark.parametrize("flip", [0.0, 0.2])
def test_gaussian_elimination_is_the_brute_force_search_over_parities(flip):
    _, xs, ys = parity_prompts(n_dims=5, n_points=9, batch=30, k=2)
    g = torch.Generator().manual_seed(3)
    ys = torch.where(torch.rand(ys.shape, generator=g) < flip, -ys, ys)  # contradictions when flip > 0
    queries = torch.where(torch.rand(xs.shape, generator=g) < 0.5, 1.0, -1.0)
    queries[:, ::2] = xs[:, ::2]  # half the queries the prompt's own x
    ours = build_baseline("gaussian_elimination")(xs, ys, queries)
    expected = brute_force_parity(xs.numpy(), ys.numpy(), queries.numpy())
    assert np.array_equal(ours.numpy(), expected)
    assert (expected == 0).any() and (expected != 0).any()  # both cases exercised


def test_gaussian_elimination_is_exact_once_the_context_determines_the_parity():
    task, xs, ys = parity_prompts(n_dims=10, n_points=40, batch=300, k=2)
    acc = pointwise_metric(task, build_baseline("gaussian_elimination")(xs, ys), ys).mean(0)
    assert acc[0] < 0.6 and acc[20:].min() > 0.99 and acc[35:].min() == 1.0


def test_a_prediction_of_zero_scores_a_fair_coin():
    task = build_task("sparse_parity", n_dims=4)
    ys = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    assert pointwise_metric(task, torch.tensor([[0.0, 0.0, 2.0, 3.0]]), ys).tolist() == [[0.5, 0.5, 1.0, 0.0]]


def test_retrieval_inputs_are_keys_with_repeats_and_labels_their_values():
    task = build_task("retrieval", n_dims=4, keys=6)
    gens = make_generators(0)
    params = task.sample(gens["functions"], 50, 4)
    xs = task.inputs(params, torch.randn(50, 30, 4, generator=gens["inputs"]))
    ys = task.apply(params, xs)
    for b in range(50):
        table = {tuple(k.tolist()): v for k, v in zip(params["table"][b], params["values"][b].tolist())}
        assert all(table[tuple(x.tolist())] == y for x, y in zip(xs[b], ys[b].tolist()))
    counts = torch.stack([(xs == params["table"][:, j : j + 1]).all(-1).sum(1) for j in range(6)], 1)
    assert counts.sum().item() == 50 * 30 and abs(counts.float().mean().item() / 30 - 1 / 6) < 0.01


def test_lookup_is_a_dictionary_of_the_earlier_pairs():
    task = build_task("retrieval", n_dims=3, keys=5)
    xs, ys = PromptSampler(task, 20, make_generators(2)).sample(25)
    ours = build_baseline("lookup")(xs, ys)
    for b in range(25):
        seen: dict[tuple, float] = {}
        for i in range(20):
            key = tuple(xs[b, i].tolist())
            assert ours[b, i].item() == seen.get(key, 0.0)
            seen[key] = ys[b, i].item()
    seen_share = (ours != 0).float().mean(0)
    assert seen_share[0] == 0 and seen_share[-1] > 0.9  # the error falls to 0 as keys repeat


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("sparse_parity", {"k": 7}, "task.k=7"),
        ("sparse_parity", {"bias": 1.0}, "task.bias"),
        ("retrieval", {"keys": 0}, "task.keys"),
    ],
)
def test_bad_parameters_are_named(name, params, message):
    with pytest.raises(ValueError, match=message):
        build_task(name, n_dims=6, **params)


def test_parity_settings_bias_the_bits_and_flip_the_context_labels():
    task = build_task("sparse_parity", n_dims=8)
    biased = setting_prompts("bits_0.25", task, 200, 20, seed=0)
    assert abs((biased.xs == 1).float().mean().item() - 0.25) < 0.02
    flipped = setting_prompts("flip_0.1", task, 400, 20, seed=0)
    assert torch.equal(flipped.targets, flipped.clean)
    share = (flipped.ys != flipped.targets).float().mean().item()
    assert 0.08 < share < 0.12
    with pytest.raises(ValueError, match="flip"):
        setting_prompts("flip_0.1", build_task("linear", n_dims=4), 4, 5, seed=0)
