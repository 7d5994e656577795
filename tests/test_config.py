import dataclasses
from typing import get_args

import pytest
import torch
import yaml

from minicl.common import bf16_is_fast
from minicl.config import CONF, ModelSchema, TaskSchema, check_config, model_config, plain, task_from_config
from minicl.model import MODELS, Arch, ModelConfig
from minicl.rundir import migrated, resolved_config, schema_defaults
from minicl.tasks import TASKS


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("task", options("task"))
@pytest.mark.parametrize("model", options("model"))
def test_every_task_and_model_composes_and_checks(compose_cfg, task, model):
    cfg = compose_cfg(f"task={task}", f"model={model}")
    check_config(cfg)
    assert task_from_config(cfg.task).name == task
    assert model_config(cfg).n_dims == cfg.task.n_dims


OWN_TASK = {"linear_d20": "linear"}  # experiments sized for one task, as claim_<task> is


@pytest.mark.parametrize(
    "task, experiment",
    [
        (t, e)
        for t in options("task")
        for e in options("experiment")
        if OWN_TASK.get(e, e.removeprefix("claim_") if e.startswith("claim_") else t) == t
    ],
)
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


def test_amp_and_compile_resolve_to_what_the_device_runs(compose_cfg):
    cpu = torch.device("cpu")
    chosen = plain(resolved_config(compose_cfg("task=linear", "trainer.amp=null"), cpu))["trainer"]
    assert (chosen["amp"], chosen["compile"]) == (bf16_is_fast(cpu), False)
    paper = plain(resolved_config(compose_cfg("task=linear"), cpu))[
        "trainer"
    ]  # fp32 unless asked: the paper's precision
    assert (paper["amp"], paper["compile"]) == (False, False)
    assert plain(resolved_config(compose_cfg("trainer.compile=true"), cpu))["trainer"]["compile"] is True


def test_each_config_object_is_declared_once():
    model_fields = {f.name for f in dataclasses.fields(ModelSchema)}
    assert model_fields == {f.name for f in dataclasses.fields(ModelConfig)} - {"n_dims"} | {"name"}
    task_fields = {f.name for f in dataclasses.fields(TaskSchema)}
    assert all({f.name for f in dataclasses.fields(cls)} <= task_fields for cls in TASKS.values())
    assert set(get_args(Arch)) == set(MODELS)  # the architectures the schema allows are the ones built


def test_yamls_hold_only_what_differs_from_the_defaults():
    defaults = schema_defaults()
    for group in ("task", "model"):
        for path in (CONF / group).glob("*.yaml"):
            values = yaml.safe_load(path.read_text())
            same = [key for key, value in values.items() if key != "name" and defaults[group].get(key) == value]
            assert same == [], f"{path.name} restates defaults: {same}"


def test_a_config_saved_before_a_key_existed_reads_with_its_default(compose_cfg):
    saved = plain(compose_cfg("task=linear"))
    del saved["model"]["d_state"], saved["trainer"]["decay_steps"]
    assert migrated(saved) == plain(compose_cfg("task=linear"))
