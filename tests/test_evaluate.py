import json
import math
import subprocess
import sys

import pytest
import torch

from minicl.baselines import LeastSquares
from minicl.evaluate import default_baselines, evaluate, evaluate_run, load_baselines
from minicl.settings import default_settings, parse, setting_prompts
from minicl.tasks import PromptSampler, build_task, make_generators
from minicl.train import train

D, N = 8, 17


def prompts(setting, n=400, task="linear"):
    return setting_prompts(setting, build_task(task, n_dims=D), n, N, seed=0)


def test_random_quadrants_share_one_orthant_and_queries_do_not():
    p = prompts("random_quadrants")
    signs = torch.sign(p.xs)
    assert (signs == signs[:, :1]).all()
    assert (torch.sign(p.queries) != signs[:, :1]).any(dim=-1).float().mean() > 0.9


def test_orthogonal_queries_are_orthogonal_with_the_same_norm():
    p = prompts("orthogonal_train_test")
    assert p.xs.shape[1] == D  # no orthogonal query exists past d points
    inner = torch.einsum("bid,bjd->bij", p.queries, p.xs)  # query i against x_j
    earlier = torch.ones(D, D, dtype=torch.bool).tril(-1)
    assert inner[:, earlier].abs().max() < 1e-4
    torch.testing.assert_close(p.queries.norm(dim=-1), p.xs.norm(dim=-1))


def test_overlapping_queries_repeat_an_earlier_point():
    p = prompts("overlapping_train_test")
    same = (p.queries.unsqueeze(2) == p.xs.unsqueeze(1)).all(-1)  # (B, query i, point j)
    earlier = torch.ones(N, N, dtype=torch.bool).tril(-1)
    assert (same & earlier)[:, 1:].any(-1).all()
    torch.testing.assert_close(p.targets[:, 1:], p.ys.gather(1, same[:, 1:].float().argmax(-1)))


@pytest.mark.parametrize(
    "setting, spectrum",
    [
        ("half_subspace", torch.cat((torch.full((D // 2,), 2.0), torch.zeros(D - D // 2)))),
        ("skewed", (1 / torch.arange(1, D + 1)) ** 2 * D / ((1 / torch.arange(1, D + 1)) ** 2).sum()),
    ],
)
def test_covariance_spectrum(setting, spectrum):
    xs = prompts(setting, n=4000).xs.reshape(-1, D)
    eig = torch.linalg.eigvalsh(xs.T @ xs / len(xs)).flip(0)
    torch.testing.assert_close(eig, spectrum, atol=0.03 * D, rtol=0.05)
    assert xs.pow(2).sum(-1).mean().item() == pytest.approx(D, rel=0.03)


def test_scales_and_noise():
    base, sx, sy = prompts("standard"), prompts("scale_x_3"), prompts("scale_y_0.5")
    torch.testing.assert_close(sx.xs, 3 * base.xs)
    torch.testing.assert_close(sx.ys, 3 * base.ys)
    torch.testing.assert_close(sy.ys, 0.5 * base.ys)
    noisy = prompts("noisy_linear", n=2000)
    base = prompts("standard", n=2000)
    torch.testing.assert_close(noisy.xs, base.xs)  # same input and function streams, noise added
    # the original's noisy setting: (x.w + N(0, 1)) * sqrt(d) / std, the std about sqrt(d + 1)
    assert noisy.ys.std().item() == pytest.approx(math.sqrt(D), rel=1e-5)
    assert (noisy.ys * math.sqrt(D + 1) / math.sqrt(D) - base.ys).std().item() == pytest.approx(1.0, rel=0.05)


def test_noisy_labels_are_the_originals():
    task = build_task("linear", n_dims=D)
    p = setting_prompts("noisy_linear", task, 3, 7, seed=5, noise_std=0.5)
    gens = make_generators(5, "cpu", "eval")
    w = task.sample(gens["functions"], 3, D)["w"]
    xs = torch.randn(3, 7, D, generator=gens["inputs"])
    ys = (xs @ w.unsqueeze(-1)).squeeze(-1) + 0.5 * torch.randn(3, 7, generator=gens["noise"])
    torch.testing.assert_close(p.xs, xs)
    torch.testing.assert_close(p.ys, ys * math.sqrt(D) / ys.std())


def test_noisy_setting_uses_the_tasks_noise_and_keeps_sparse_w_sparse():
    clean, noisy = (
        setting_prompts("noisy_linear", build_task("linear", n_dims=D), 2000, N, 0, noise_std=s) for s in (0.0, 2.0)
    )
    residual = noisy.ys * math.sqrt(D + 4.0) / math.sqrt(D) - clean.ys  # undo the rescaling
    assert residual.std().item() == pytest.approx(2.0, rel=0.05)
    sparse = build_task("sparse_linear", n_dims=10, sparsity=2)
    p = setting_prompts("noisy_linear", sparse, 64, 30, 0, noise_std=0.0)
    w = LeastSquares().weights(p.xs, p.ys)[:, -1]  # 29 noiseless points in 10 dims: w exactly
    assert ((w.abs() > 1e-4).sum(1) == 2).all()
    assert p.ys.pow(2).mean().item() == pytest.approx(sparse.normaliser, rel=1e-3)  # predicting 0 scores 1
    with pytest.raises(ValueError, match="noisy_linear setting needs one of the tasks"):
        setting_prompts("noisy_linear", build_task("quadratic", n_dims=D), 8, N, 0)


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="unknown evaluation setting 'sideways'"):
        parse("sideways")
    for bad in ("scale_x_big", "scale_x_0", "skew_0.5", "noise_-1"):
        with pytest.raises(ValueError, match=f"evaluation setting '{bad}' needs a value"):
            parse(bad)
    assert parse("noise_0")[1] == 0 and parse("skew_1")[1] == 1 and parse("scale_y_0.5")[1] == 0.5
    assert default_settings(build_task("decision_tree", n_dims=5)) == ["standard"]
    assert "linear" in default_settings(build_task("relu_2nn", n_dims=5))


def task_cfg(name="linear"):
    return {
        "name": name,
        "n_dims": D,
        "sparsity": 3,
        "noise_std": 1.0,
        "hidden": 100,
        "depth": 4,
        "w_scale": 1.0,
        "num_tasks": None,
        "num_training_examples": None,
        "curriculum": {"points": {"end": N}},
    }


def test_metrics_and_plots_are_written_and_reproducible(tmp_path):
    baselines = load_baselines(default_baselines(task_cfg()))
    a = evaluate(task_cfg(), baselines, tmp_path / "a", n_prompts=64, settings=["standard", "skewed"], progress=False)
    b = evaluate(task_cfg(), baselines, tmp_path / "b", n_prompts=64, settings=["standard", "skewed"], progress=False)
    c = evaluate(task_cfg(), baselines, tmp_path / "c", n_prompts=64, settings=["standard"], seed=1, progress=False)
    assert a == b and a["settings"]["standard"] != c["settings"]["standard"]
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == a
    assert (tmp_path / "a" / "plots" / "standard.png").stat().st_size > 1000
    s = a["settings"]["standard"]
    assert set(s["models"]) == {"least_squares", "knn_3", "averaging"} and s["normaliser"] == D
    m = s["models"]["least_squares"]
    assert all(lo <= mean <= hi for lo, mean, hi in zip(m["lo"], m["mean"], m["hi"]))
    assert m["mean"][2 * D] < 1e-6 and s["trivial"][0] == pytest.approx(1.0, rel=0.3)


def test_default_baselines_per_task():
    assert set(default_baselines(task_cfg("sparse_linear"))) >= {"lasso_1", "lasso_1e-4"}
    assert default_baselines(task_cfg("noisy_linear"))["ridge"] == {"name": "ridge", "noise_std": 1.0}
    trees = default_baselines(task_cfg("decision_tree"))
    assert {"decision_tree_4", "xgboost"} <= set(trees)
    assert trees["gd_2nn"] == {
        "name": "gd_2nn",
        "hidden": 100,
        "lr": 0.005,
        "steps": 100,
    }  # in the original's tree plots


def test_evaluate_run_writes_next_to_the_run(tiny_cfg, tmp_path):
    train(tiny_cfg(), tmp_path)
    metrics = evaluate_run(
        tmp_path, n_prompts=32, settings=["standard", "random_quadrants"], progress=False, device="cpu"
    )
    assert "transformer" in metrics["settings"]["random_quadrants"]["models"]
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "plots" / "random_quadrants.png").exists()


def test_a_pool_run_is_evaluated_on_its_pool_and_on_fresh_tasks_with_dmmse_and_ridge(tiny_cfg, tmp_path):
    train(tiny_cfg("task.num_tasks=4", "trainer.seed=3"), tmp_path)
    metrics = evaluate_run(tmp_path, n_prompts=64, progress=False, device="cpu")
    assert list(metrics["settings"])[:2] == ["standard", "pool_tasks"]
    pooled, fresh = (metrics["settings"][s]["models"] for s in ("pool_tasks", "standard"))
    assert {"dmmse", "ridge"} <= pooled.keys() and pooled["dmmse"]["mean"][3] < 1e-3  # 3 pairs pick 1 of 4 tasks
    assert fresh["dmmse"]["mean"][10] > 0.1 > fresh["ridge"]["mean"][10]  # fresh tasks: the pool's posterior is wrong
    pool = PromptSampler(build_task("linear", n_dims=5), 1, make_generators(0), num_tasks=4, pool_seed=3).function_pool[
        "w"
    ]
    p = setting_prompts("pool_tasks", build_task("linear", n_dims=5), 64, 11, 0, num_tasks=4, pool_seed=3)
    fits = (p.ys.unsqueeze(-1) - p.xs @ pool.T).abs().amax(1)  # (prompts, pooled tasks): one fits exactly
    assert (fits.amin(1) < 1e-4).all() and len(set(fits.argmin(1).tolist())) == 4
    with pytest.raises(ValueError, match="needs a run trained on a finite pool"):
        setting_prompts("pool_tasks", build_task("linear", n_dims=5), 4, 11, 0)


def test_command_line_baselines_only(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "minicl.evaluate",
        "task=sparse_linear",
        "task.n_dims=6",
        "task.curriculum.dims.end=6",
        "n_prompts=32",
        "settings=[standard]",
        "~baselines.knn_3",
        f"hydra.run.dir={tmp_path}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    models = json.loads((tmp_path / "metrics.json").read_text())["settings"]["standard"]["models"]
    assert "knn_3" not in models and "lasso_1e-2" in models
    assert "lasso_1e-2" in out.stdout
