"""Bad input, tried and listed: each case fails fast, names the bad value, and leaves no file behind."""

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException

from minicl import ICLRegressor, load_model
from minicl.baselines import BASELINES, build_baseline
from minicl.model import ModelConfig, Transformer
from minicl.rundir import CheckpointError
from minicl.settings import parse
from minicl.train import train
from tests.helpers import SHORT, TINY


def run(*overrides):
    """Train the paper's config on the tiny model with these overrides in a fresh run directory
    (which must not appear on failure)."""

    def act(compose_cfg, tmp_path):
        train(compose_cfg("model=tiny", *SHORT, *overrides), tmp_path / "run")

    return act


def model_call(xs_shape, ys_shape, dtype=torch.float32, **config):
    def act(compose_cfg, tmp_path):
        model = Transformer(
            ModelConfig(**({"n_dims": 4, "n_positions": 8, "n_embd": 16, "n_layer": 1, "n_head": 2} | config))
        )
        model(torch.randn(*xs_shape), torch.randn(*ys_shape).to(dtype))

    return act


def resume_with(*changed):
    def act(compose_cfg, tmp_path):
        train(compose_cfg(*TINY), tmp_path / "run")
        (tmp_path / "run" / "metrics.jsonl").unlink()  # what the refused resume must not rewrite
        train(compose_cfg(*TINY, *changed), tmp_path / "run")

    return act


def load(make):
    def act(compose_cfg, tmp_path):
        make(tmp_path / "thing")
        load_model(tmp_path / "thing")

    return act


CASES = {
    "unknown task": (run("task=cubic"), MissingConfigException, "cubic"),
    "unknown model": (run("model=huge"), MissingConfigException, "huge"),
    "misspelt key": (run("trainer.stepz=10"), ConfigCompositionException, "stepz"),
    "wrong type": (run("trainer.steps=ten"), ConfigCompositionException, "ten"),
    "float for an int": (run("task=sparse_linear", "task.sparsity=1.5"), ConfigCompositionException, "1.5"),
    "n_embd not divisible by n_head": (run("model.n_embd=65"), ValueError, "n_embd=65 is not divisible by n_head=2"),
    "more points than positions": (
        run("model.n_positions=30"),
        ValueError,
        "points.end=41 is above model.n_positions=30",
    ),
    "sparsity above dims": (
        run("task=sparse_linear", "task.sparsity=25"),
        ValueError,
        "sparsity=25 must be in 1..n_dims=20",
    ),
    "sparsity above the first active dims": (
        run("task=sparse_linear", "task.sparsity=6"),
        ValueError,
        "sparsity=6 is above the 5 active dims",
    ),
    "curriculum ends above the dims": (
        run("task.curriculum.dims.end=25"),
        ValueError,
        "dims.end=25 is above task.n_dims=20",
    ),
    "curriculum starts at zero": (run("task.curriculum.points.start=0"), ValueError, "points needs 0 < start <= end"),
    "zero dims": (run("task.n_dims=0"), ValueError, "task.n_dims must be positive, got 0"),
    "negative steps": (run("trainer.steps=-1"), ValueError, "trainer.steps must be >= 0, got -1"),
    "zero batch": (run("trainer.batch_size=0"), ValueError, "trainer.batch_size must be >= 1, got 0"),
    "zero learning rate": (run("trainer.lr=0"), ValueError, "trainer.lr must be positive, got 0"),
    "negative heads": (run("model.n_head=-2"), ValueError, "n_head must be a positive integer, got -2"),
    "zero layers": (run("model.n_layer=0"), ValueError, "n_layer must be a positive integer, got 0"),
    "unknown device": (run("trainer.device=tpu"), ValueError, "trainer.device='tpu' is not one of"),
    "unknown non-finite policy": (
        run("trainer.on_nonfinite=ignore"),
        ConfigCompositionException,
        "on_nonfinite=ignore",
    ),
    "unknown schedule": (run("trainer.schedule=linear"), ConfigCompositionException, "trainer.schedule=linear"),
    "unknown architecture": (run("model.arch=gru"), ConfigCompositionException, "model.arch=gru"),
    "unknown positions": (run("model.pos_emb=alibi"), ConfigCompositionException, "model.pos_emb=alibi"),
    "resume with another config": (
        resume_with("trainer.lr=0.5"),
        ValueError,
        "different config; refusing to resume: trainer.lr: 0.001 -> 0.5",
    ),
    "load_model: missing path": (load(lambda p: None), FileNotFoundError, "no run directory or checkpoint at"),
    "load_model: empty directory": (load(lambda p: p.mkdir()), CheckpointError, "holds neither a minicl checkpoint"),
    "load_model: empty file": (load(lambda p: p.write_bytes(b"")), CheckpointError, "is empty"),
    "load_model: text file": (load(lambda p: p.write_text("hello")), CheckpointError, "unreadable"),
    "load_model: foreign checkpoint": (
        load(lambda p: torch.save({"weights": 1}, p)),
        CheckpointError,
        r"not a minicl checkpoint: found \['weights'\]",
    ),
    "model: prompt too long": (
        model_call((1, 9, 4), (1, 9)),
        ValueError,
        "prompt has 9 points but the model has learned positions for only n_positions=8",
    ),
    "model: wrong width": (
        model_call((1, 5, 3), (1, 5)),
        ValueError,
        r"xs must have shape \(B, N, 4\), got \(1, 5, 3\)",
    ),
    "model: ys of the wrong shape": (
        model_call((1, 5, 4), (1, 6)),
        ValueError,
        r"ys must have shape \(1, 5\) to match xs, got \(1, 6\)",
    ),
    "model: integer ys": (
        model_call((1, 5, 4), (1, 5), torch.long),
        ValueError,
        "must be floating point, got torch.float32 and torch.int64",
    ),
    "unknown evaluation setting": (
        lambda c, p: parse("upside_down"),
        ValueError,
        "unknown evaluation setting 'upside_down'",
    ),
    "unknown baseline": (lambda c, p: build_baseline("svm"), ValueError, "unknown baseline 'svm'"),
    "ICLRegressor: too many features": (
        lambda c, p: ICLRegressor(Transformer(ModelConfig(n_dims=2))).fit(
            torch.zeros(3, 5).numpy(), torch.zeros(3).numpy()
        ),
        ValueError,
        "5 features but the model reads at most n_dims=2",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, compose_cfg, tmp_path):
    act, error, match = CASES[case]
    with pytest.raises(error, match=match) as raised:
        act(compose_cfg, tmp_path)
    if error is ConfigCompositionException:  # Hydra prints the cause: the value and what is allowed
        assert raised.value.__cause__ is not None and match.split("=")[-1] in str(raised.value.__cause__)
    leftovers = {p.name for p in tmp_path.rglob("*")} - {
        "run",
        "state.pt",
        "state.prev.pt",
        "final_eval.json",
        "provenance.json",
        "thing",
    }
    assert not leftovers, f"{case} left {leftovers}"
    if case != "resume with another config":
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize(
    "xs_shape, ys_shape, dtype, match",
    [
        ((2, 5, 3), (2, 4), torch.float32, r"ys must have shape \(2, 5\)"),
        ((5, 3), (5,), torch.float32, r"xs must have shape \(B, N, D\), got \(5, 3\)"),
        ((2, 5, 3), (2, 5), torch.long, "floating point"),
    ],
)
def test_every_baseline_rejects_bad_prompts(name, xs_shape, ys_shape, dtype, match):
    needed = {
        "ridge": {"lam": 1.0},
        "dmmse": {"pool": torch.randn(4, 3)},
        "bayes_sparse": {"sparsity": 2},
    }  # parameters without defaults
    baseline = build_baseline(name, **needed.get(name, {}))
    with pytest.raises(ValueError, match=match):
        baseline(torch.randn(*xs_shape), torch.randn(*ys_shape).to(dtype))
