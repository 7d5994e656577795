"""What the tests share: the one small training configuration, composing configs, and checks
that read a run directory back."""

import json
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from minicl import load_model
from minicl.common import pointwise_metric, standard_prompts
from minicl.config import CONF, register_schemas, task_from_config
from minicl.rundir import read_run

# A few quick steps of any config, on the CPU, writing everything a run writes.
SHORT = [
    "trainer.steps=6",
    "trainer.checkpoint_every=2",
    "trainer.log_every=2",
    "trainer.eval_prompts=64",
    "trainer.progress=false",
    "trainer.device=cpu",
]
# The small test run: linear functions of 5 dims, 11 points, the tiny model, SHORT.
TINY = [
    "task=linear",
    "experiment=quick",
    "task.curriculum.points.start=11",
    "task.curriculum.points.end=11",
    "model.n_positions=11",
    *SHORT,
]


def compose_config(*overrides: str, config_name: str = "train"):
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def tiny(*overrides: str):
    """The small test run's config, with `overrides` after TINY's."""
    return compose_config(*TINY, *overrides)


def train_command(run_dir: Path, *overrides: str, launcher: tuple[str, ...] = ()) -> list[str]:
    """`python -m minicl.train` of the small test run in run_dir, for a subprocess (`launcher`: e.g. torchrun's)."""
    return [sys.executable, *launcher, "-m", "minicl.train", *TINY, f"hydra.run.dir={run_dir}", *overrides]


def logged(run_dir: Path, key: str = "step") -> list:
    """`key` of every line of a run's metrics.jsonl."""
    return [json.loads(line)[key] for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def assert_final_eval_is_the_models(run_dir: Path) -> None:
    """final_eval.json's error is the saved model's, recomputed on the same fresh prompts."""
    report = json.loads((Path(run_dir) / "final_eval.json").read_text())
    cfg = read_run(run_dir)["config"]
    model, task = load_model(run_dir), task_from_config(cfg["task"])
    xs, ys = standard_prompts(
        task, cfg["trainer"]["eval_prompts"], cfg["task"]["curriculum"]["points"]["end"], cfg["trainer"]["seed"]
    )
    error = pointwise_metric(task, model(xs, ys).detach(), ys)[:, report["k"]].mean().item()
    assert report[model.config.arch] == pytest.approx(error, rel=1e-4)
