import json
import subprocess
import sys

import pytest
import torch

from minicl.algorithm_probe import probe_algorithms
from minicl.baselines import LeastSquares
from minicl.explore import run_sweep, sweep_prompts
from minicl.probe import implicit_weights
from minicl.settings import setting_prompts, skewed_eigenvalues
from minicl.tasks import build_task
from minicl.train import train
from tests.helpers import SHORT

D = 6


def sweep(name, value, n=2000, task="linear"):
    p = sweep_prompts(name, value, build_task(task, n_dims=D), n, 12, seed=0)
    return p.xs, p.targets, p.clean


def test_x_and_w_scale_move_what_they_name():
    xs1, ys1, _ = sweep("x_scale", 1.0)
    xs3, ys3, _ = sweep("x_scale", 3.0)
    torch.testing.assert_close(xs3, 3 * xs1)
    _, yw, _ = sweep("w_scale", 0.5)
    torch.testing.assert_close(yw, 0.5 * ys1)


@pytest.mark.parametrize(
    "sweep_name, setting",
    [
        ("x_scale", "scale_x_2.0"),
        ("w_scale", "scale_y_2.0"),
        ("skew", "skew_2.0"),
        ("noise", "noise_2.0"),
        ("dims", "dims_2.0"),
    ],
)
def test_sweeps_draw_the_evaluation_settings_prompts(sweep_name, setting):
    """One distortion, written once: a sweep at a value is its settings family at that value."""
    a = sweep_prompts(sweep_name, 2.0, build_task("linear", n_dims=D), 16, 12, seed=3)
    b = setting_prompts(setting, build_task("linear", n_dims=D), 16, 12, seed=3)
    for name in ("xs", "ys", "targets", "clean"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name))


def test_noise_sweep_adds_noise_of_that_std():
    _, ys, clean = sweep("noise", 2.0)
    assert (ys - clean).std().item() == pytest.approx(2.0, rel=0.03)


def test_skew_sweep_has_that_condition_number():
    xs, _, _ = sweep("skew", 100.0)
    eig = torch.linalg.eigvalsh(torch.cov(xs.reshape(-1, D).T))
    assert (eig[-1] / eig[0]).item() == pytest.approx(100.0, rel=0.15)
    assert xs.pow(2).sum(-1).mean().item() == pytest.approx(D, rel=0.03)
    assert skewed_eigenvalues(D, 1.0).eq(1).all()


def test_dims_sweep_zeroes_the_inactive_coordinates():
    xs, _, clean = sweep("dims", 2)
    assert (xs[..., 2:] == 0).all() and (xs[..., :2] != 0).all()
    assert clean.pow(2).mean().item() == pytest.approx(2.0, rel=0.1)


@pytest.fixture
def tiny_run(tiny_cfg, tmp_path):
    def make(*overrides):
        train(tiny_cfg(*overrides), tmp_path / "run")
        return tmp_path / "run"

    return make


def test_sweep_writes_json_and_plots(tiny_run):
    run = tiny_run()
    out = run_sweep(run, "x_scale", values=[0.5, 1.0, 2.0], n_prompts=32)
    assert [r["value"] for r in out["results"]] == [0.5, 1.0, 2.0]
    assert set(out["results"][0]["models"]) == {"transformer", "least_squares", "knn_3", "averaging"}
    assert json.loads((run / "explore" / "x_scale.json").read_text()) == out
    assert (run / "explore" / "x_scale.png").exists() and (run / "explore" / "x_scale_curves.png").exists()
    with pytest.raises(ValueError, match="unknown sweep 'colour'"):
        run_sweep(run, "colour")


def test_learned_positions_refuse_a_longer_prompt(tiny_run):
    with pytest.raises(
        ValueError, match="past the learned positions \\(n_positions=11\\); train with model.pos_emb=rope"
    ):
        run_sweep(tiny_run(), "length", max_points=22, n_prompts=8)


@pytest.mark.parametrize("pos_emb", ["rope", "none"])
def test_rope_and_none_evaluate_twice_their_training_length(tiny_run, pos_emb):
    out = run_sweep(tiny_run(f"model.pos_emb={pos_emb}"), "length", n_prompts=16)
    assert out["n_points"] == 22 and out["results"][-1]["value"] == 21
    assert len(out["results"][-1]["models"]["transformer"]["mean"]) == 22


def test_probe_recovers_a_hand_set_linear_function():
    w = torch.randn(D)
    xs, ys = torch.randn(4, 9, D), torch.randn(4, 9)
    found = implicit_weights(lambda xs, ys, queries: queries @ w, xs, ys)["weights"]
    torch.testing.assert_close(found, w.expand(4, 9, D))


def test_probe_of_least_squares_is_least_squares():
    xs = torch.randn(8, 14, D, dtype=torch.float64)
    ys = (xs @ torch.randn(8, D, 1, dtype=torch.float64)).squeeze(-1)
    report = implicit_weights(LeastSquares(), xs, ys)
    assert report["least_squares"]["cosine"][0] is None  # no pairs, no weights
    assert min(report["least_squares"]["cosine"][1:]) > 1 - 1e-9
    assert max(report["least_squares"]["rel_error"][1:]) < 1e-6


def test_explore_command_line(tiny_run):
    run = tiny_run()
    outs = {}
    for sweep in ("dims", "probe", "algorithms"):
        outs[sweep] = subprocess.run(
            [sys.executable, "-m", "minicl.explore", f"run={run}", f"sweep={sweep}", "n_prompts=16"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert outs[sweep].returncode == 0, outs[sweep].stderr
    for name in ("dims.json", "probe.json", "algorithms.json", "algorithms.png"):
        assert (run / "explore" / name).exists()
    assert "cosine at k=10" in outs["probe"].stdout
    report = json.loads((run / "explore" / "algorithms.json").read_text())
    assert len(report["settings"]["skewed"]["layers"]) == report["n_layer"] + 1  # the embedding, then each block
    assert "standard (k=5): closest algorithm per layer" in outs["algorithms"].stdout


def test_the_algorithms_sweep_refuses_a_task_that_is_not_linear(compose_cfg, tmp_path):
    train(compose_cfg("task=relu_2nn", "model=tiny", *SHORT, "trainer.steps=2"), tmp_path)
    with pytest.raises(ValueError, match="a run of a linear task, not 'relu_2nn'"):
        probe_algorithms(tmp_path)
