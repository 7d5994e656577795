from pathlib import Path

import pytest

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


@pytest.mark.parametrize("task, experiment", [  # a claim's experiment is sized for its own task
    (t, e) for t in options("task") for e in options("experiment") if not e.startswith("claim_") or e == f"claim_{t}"
])
def test_every_experiment_composes(compose_cfg, experiment, task):
    check_config(compose_cfg(f"task={task}", f"experiment={experiment}"))


def test_a_claim_experiment_with_another_task_fails_clearly(compose_cfg):
    cfg = compose_cfg("task=sparse_linear", "experiment=claim_linear")  # curriculum from 2 dims, sparsity 3
    with pytest.raises(ValueError, match="task.sparsity=3 is above the 2 active dims the curriculum starts with"):
        check_config(cfg)


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


def test_training_defaults_to_the_papers_precision(compose_cfg):
    # fp32 (TF32 matmuls on CUDA): bf16 measured less accurate near least squares (README, precision)
    assert compose_cfg("task=linear").trainer.amp is False
    assert compose_cfg("task=linear", "trainer.amp=null").trainer.amp is None
