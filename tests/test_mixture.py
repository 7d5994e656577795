"""task=mixture (each prompt draws one component task) and the Bayes model average over noise
levels (bayes_noise_mixture), against a numpy enumeration."""

import numpy as np
import pytest
import torch

from minicl.baselines import build_baseline
from minicl.compare import run_settings
from minicl.config import plain
from minicl.evaluate import evaluate_run
from minicl.explore import run_sweep
from minicl.rundir import read_run
from minicl.settings import default_settings, setting_prompts
from minicl.tasks import PromptSampler, build_task, make_generators
from minicl.train import train

NOISY = [{"name": "noisy_linear", "noise_std": 0.1}, {"name": "noisy_linear", "noise_std": 2.0}]


def enumerated(x: np.ndarray, y: np.ndarray, query: np.ndarray, stds, weights) -> float:
    """The posterior-predictive mean at `query` from the pairs (x, y), one noise level at a time:
    evidence N(y; 0, X X^T + s^2 I) times the prior, ridge at lam = s^2 for the mean."""
    logs, means = [], []
    for s, p in zip(stds, weights):
        cov = x @ x.T + s**2 * np.eye(len(x))
        _, logdet = np.linalg.slogdet(cov) if len(x) else (1.0, 0.0)
        quad = y @ np.linalg.solve(cov, y) if len(x) else 0.0
        logs.append(np.log(p) - 0.5 * (quad + logdet + len(x) * np.log(2 * np.pi)))
        means.append(query @ np.linalg.solve(x.T @ x + s**2 * np.eye(x.shape[1]), x.T @ y))
    post = np.exp(np.array(logs) - max(logs))
    return float(post @ np.array(means) / post.sum())


@pytest.mark.parametrize("stds, weights", [([0.1, 2.0], None), ([0.3, 1.0, 3.0], [0.2, 0.5, 0.3])])
def test_bayes_noise_mixture_is_the_enumerated_posterior_mean(stds, weights):
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(4, 12, 5, generator=gen, dtype=torch.float64)
    noise = torch.tensor([0.1, 2.0, 0.5, 1.0], dtype=torch.float64)[:, None]
    ys = (xs @ torch.randn(4, 5, 1, generator=gen, dtype=torch.float64)).squeeze(-1) + noise * torch.randn(
        4, 12, generator=gen, dtype=torch.float64
    )
    preds = build_baseline("bayes_noise_mixture", noise_stds=stds, weights=weights)(xs, ys)
    prior = weights or [1 / len(stds)] * len(stds)
    for b in range(4):
        for i in range(12):
            x, y = xs[b, :i].numpy(), ys[b, :i].numpy()
            assert preds[b, i].item() == pytest.approx(enumerated(x, y, xs[b, i].numpy(), stds, prior), abs=1e-9)


def test_bayes_noise_mixture_refuses_bad_levels():
    with pytest.raises(ValueError, match="positive noise_stds and as many non-negative weights"):
        build_baseline("bayes_noise_mixture", noise_stds=[0.1, 2.0], weights=[1.0])
    with pytest.raises(ValueError, match="positive noise_stds"):
        build_baseline("bayes_noise_mixture", noise_stds=[0.0])


def test_mixture_prompts_have_each_components_statistics():
    """Component frequencies follow the weights; each component's labels have its own variance,
    d (the signal) plus its noise variance; the noise-free mean is the signal alone."""
    task = build_task("mixture", n_dims=4, components=NOISY, weights=[1, 3])
    params = task.sample(make_generators(0)["functions"], 40_000, 4)
    share = params["component"].double().mean().item()
    assert share == pytest.approx(0.75, abs=0.01)
    xs = torch.randn(40_000, 8, 4, generator=torch.Generator().manual_seed(1))
    ys = task.apply(params, xs, make_generators(0)["noise"])
    for c, std in enumerate((0.1, 2.0)):
        mine = params["component"] == c
        assert ys[mine].var().item() == pytest.approx(4 + std**2, rel=0.03)
        assert (ys - task.mean(params, xs))[mine].std().item() == pytest.approx(std, rel=0.03)
    assert task.normaliser == 4.0


def test_a_mixture_of_different_classes_and_a_finite_pool():
    task = build_task("mixture", n_dims=5, components=[{"name": "linear"}, {"name": "relu_2nn", "hidden": 8}])
    sampler = PromptSampler(task, 11, make_generators(0), num_tasks=3)
    xs, ys = sampler.sample(64)
    assert ys.shape == (64, 11) and torch.isfinite(ys).all()
    each = [  # every prompt's labels under each of the pool's three functions
        task.apply({k: v[j : j + 1].expand(64, *v.shape[1:]) for k, v in sampler.function_pool.items()}, xs)
        for j in range(3)
    ]
    assert all(any(torch.equal(e[b], ys[b]) for e in each) for b in range(64))
    assert default_settings(task) == ["standard", "component_0", "component_1"]


@pytest.mark.parametrize(
    "components, weights, message",
    [
        ([], None, "needs at least one component"),
        (NOISY, [0, 0], "positive sum"),
        (NOISY, [1, 2, 3], "must be 2 non-negative numbers"),
        ([{"name": "cubic"}], None, "needs a name from"),
        ([{"name": "noisy_linear", "noise": 1.0}], None, "takes \\['kappa', 'noise_max', 'noise_std', 'w_scale'\\]"),
        ([{"name": "linear", "n_dims": 3}], None, "n_dims is the mixture's"),
        ([{"name": "linear"}, {"name": "linear_classification"}], None, "must be regression tasks"),
    ],
)
def test_bad_mixtures_are_refused_by_name(components, weights, message):
    with pytest.raises(ValueError, match=message):
        build_task("mixture", n_dims=5, components=components, weights=weights)


def test_a_component_setting_is_that_component_judged_on_the_noise_free_value():
    task = build_task("mixture", n_dims=5, components=NOISY)
    p = setting_prompts("component_1", task, 4000, 11, seed=0)
    assert p.task is task.parts[1] and (p.ys - p.targets).std().item() == pytest.approx(2.0, rel=0.03)
    with pytest.raises(ValueError, match="needs a mixture with a component 2"):
        setting_prompts("component_2", task, 8, 11, seed=0)


def test_a_mixture_run_is_evaluated_whole_and_per_component(tiny_cfg, tmp_path):
    train(tiny_cfg("task=mixture", "trainer.steps=4"), tmp_path)
    metrics = evaluate_run(tmp_path, n_prompts=32, bootstrap=10, progress=False, device="cpu")
    assert list(metrics["settings"]) == ["standard", "component_0", "component_1"]
    models = metrics["settings"]["component_1"]["models"]
    assert {"transformer", "bayes_noise_mixture", "ridge_c0", "ridge_c1", "ridge_0.01", "ridge_10"} <= set(models)
    sweep = run_sweep(tmp_path, "x_scale", values=[1.0, 2.0], n_prompts=16)
    assert [len(r["components"]) for r in sweep["results"]] == [2, 2]
    assert run_settings(read_run(tmp_path)["config"]) == ["standard", "component_0", "component_1"]


@pytest.mark.parametrize("noise_max", [0.0, 2.0])
def test_noise_max_draws_each_prompts_noise_std_uniformly(noise_max):
    task = build_task("noisy_linear", n_dims=5, noise_std=0.5, noise_max=noise_max)
    gen, noise_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    params = task.sample(gen, 4000, 5)
    xs = torch.randn(4000, 200, 5, generator=gen)
    residual_std = (task.apply(params, xs, noise_gen) - task.mean(params, xs)).std(1)
    if noise_max == 0:
        assert "noise_std" not in params and residual_std.mean().item() == pytest.approx(0.5, rel=0.01)
        return
    drawn = params["noise_std"]
    assert 0 <= drawn.min() and drawn.max() <= noise_max and drawn.mean().item() == pytest.approx(1.0, abs=0.05)
    assert torch.corrcoef(torch.stack((residual_std, drawn)))[0, 1] > 0.99  # each prompt carries its own std
    assert (residual_std / drawn).mean().item() == pytest.approx(1.0, abs=0.01)
    assert np.histogram(drawn.numpy(), bins=4, range=(0, noise_max))[0].min() > 900  # uniform
    with pytest.raises(ValueError, match="noise_max must be >= 0"):
        build_task("noisy_linear", n_dims=5, noise_max=-1.0)


def test_a_run_is_evaluated_on_another_task_of_its_dims(tiny_cfg, tmp_path):
    train(tiny_cfg("task=noisy_linear", "task.noise_max=2", "trainer.steps=4"), tmp_path / "run")
    mixture = plain(tiny_cfg("task=mixture").task)
    metrics = evaluate_run(
        tmp_path / "run", task=mixture, out_dir=tmp_path / "on", n_prompts=32, bootstrap=10, progress=False
    )
    assert list(metrics["settings"]) == ["standard", "component_0", "component_1"] and metrics["n_points"] == 11
    assert metrics["selection"]["model"] == "transformer" and (tmp_path / "on" / "metrics.json").is_file()
    assert not (tmp_path / "run" / "metrics.json").exists()  # the run's own evaluation is not overwritten
    with pytest.raises(ValueError, match="reads 5 dims; task.n_dims=8"):
        evaluate_run(tmp_path / "run", task=mixture | {"n_dims": 8}, out_dir=tmp_path / "x", progress=False)
