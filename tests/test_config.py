from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from minicl.config import check_config, model_config, task_from_config

CONF = Path(__file__).parents[1] / "conf"


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("task", options("task"))
@pytest.mark.parametrize("model", options("model"))
def test_every_task_and_model_composes_and_checks(compose_cfg, task, model):
    cfg = compose_cfg(f"task={task}", f"model={model}")
    check_config(cfg)
    assert task_from_config(cfg.task).name == task
    assert model_config(cfg).n_dims == cfg.task.n_dims


@pytest.mark.parametrize("experiment", options("experiment"))
@pytest.mark.parametrize("task", options("task"))
def test_every_experiment_composes(compose_cfg, experiment, task):
    check_config(compose_cfg(f"task={task}", f"experiment={experiment}"))


@pytest.mark.parametrize("task", options("task"))
def test_every_task_composes_for_evaluation_with_its_baselines(compose_cfg, task):
    from minicl.evaluate import load_baselines

    cfg = compose_cfg(f"task={task}", config_name="evaluate")
    assert "least_squares" in cfg.baselines and len(load_baselines(cfg.baselines)) >= 3


def test_defaults_are_the_papers_run(compose_cfg):
    cfg = compose_cfg()
    tr, m = cfg.trainer, cfg.model
    assert (cfg.task.name, cfg.task.n_dims, tr.steps, tr.batch_size, tr.lr) == ("linear", 20, 500_000, 64, 1e-4)
    assert (m.n_layer, m.n_embd, m.n_head, m.n_positions) == (12, 256, 8, 101)
    cur = compose_cfg("task=decision_tree").task.curriculum
    assert (cur.points.start, cur.points.end, cur.points.inc, cur.dims.start, cur.dims.end) == (26, 101, 5, 5, 20)


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (["task=cubic"], MissingConfigException, "cubic"),
        (["model=huge"], MissingConfigException, "huge"),
        (["trainer.stepz=10"], ConfigCompositionException, "stepz"),
        (["trainer.steps=ten"], ConfigCompositionException, "ten"),
        (["task.sparsity=1.5"], ConfigCompositionException, "1.5"),
    ],
)
def test_composition_errors_name_the_bad_value(compose_cfg, overrides, error, match):
    with pytest.raises(error, match=match):
        compose_cfg(*overrides)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["model.n_embd=250"], "n_embd=250 is not divisible by n_head=8"),
        (["model.n_positions=30"], "points.end=41 is above model.n_positions=30"),
        (["task=sparse_linear", "task.sparsity=25"], "sparsity=25 must be in 1..n_dims=20"),
        (["task=sparse_linear", "task.sparsity=6"], "sparsity=6 is above the 5 active dims"),
        (["task.curriculum.dims.end=25"], "dims.end=25 is above task.n_dims=20"),
        (["task.curriculum.points.start=0"], "curriculum.points needs 0 < start <= end"),
        (["task.n_dims=0"], "task.n_dims must be positive, got 0"),
        (["trainer.steps=-1"], "trainer.steps must be >= 0, got -1"),
        (["trainer.batch_size=0"], "trainer.batch_size must be >= 1, got 0"),
        (["trainer.lr=0"], "trainer.lr must be positive, got 0"),
        (["trainer.device=tpu"], "trainer.device='tpu' is not one of"),
        (["model.n_layer=0"], "n_layer must be a positive integer, got 0"),
    ],
)
def test_semantic_errors_name_the_bad_value(compose_cfg, overrides, match):
    with pytest.raises(ValueError, match=match):
        check_config(compose_cfg(*overrides))
