import dataclasses
import shutil
from typing import get_args

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from minicl.common import bf16_is_fast
from minicl.config import (
    CONF,
    ModelSchema,
    TaskSchema,
    check_config,
    migrated,
    model_config,
    plain,
    register_schemas,
    resolved_config,
    schema_defaults,
    task_from_config,
    task_schema,
)
from minicl.model import MODELS, Arch, ModelConfig
from minicl.tasks import TASKS, Task, register


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("task", options("task"))
@pytest.mark.parametrize("model", options("model"))
def test_every_task_and_model_composes_and_checks(compose_cfg, task, model):
    cfg = compose_cfg(f"task={task}", f"model={model}")
    check_config(cfg)
    assert task_from_config(cfg.task).name == task
    assert model_config(cfg).n_dims == cfg.task.n_dims


# experiments sized for one task, as claim_<task> is
OWN_TASK = {
    "linear_d20": "linear",
    "linear_deep": "linear",
    "lsa_gd": "linear",
    "quick_last": "linear",  # its dims curriculum from 2 refuses sparse_linear's sparsity 3, as claim_linear's
    "noise_mixture": "mixture",
    "lsa_noise_mixture": "mixture",
    "linear_relu_mixture": "mixture",
    "tables": "tables",
    "tables_base": "tables",
}


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
    from minicl.evaluate import load_baselines, with_components

    cfg = compose_cfg(f"task={task}", config_name="evaluate")
    baselines = with_components(plain(cfg.baselines), plain(cfg.task))  # a mixture's: its components' too
    assert "least_squares" in baselines and len(load_baselines(baselines)) >= 3


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
    paper = plain(resolved_config(compose_cfg("task=linear"), cpu))["trainer"]  # fp32 unless asked: the paper's
    assert (paper["amp"], paper["compile"]) == (False, False)
    assert plain(resolved_config(compose_cfg("trainer.compile=true"), cpu))["trainer"]["compile"] is True


def test_each_config_object_is_declared_once():
    model_fields = {f.name for f in dataclasses.fields(ModelSchema)}
    assert model_fields == {f.name for f in dataclasses.fields(ModelConfig)} - {"n_dims"} | {"name"}
    common = {f.name for f in dataclasses.fields(TaskSchema)}
    for name, cls in TASKS.items():  # each task's schema: the common fields and its class's, nothing else
        assert {f.name for f in dataclasses.fields(task_schema(name))} == common | {
            f.name for f in dataclasses.fields(cls)
        }
    assert set(get_args(Arch)) == set(MODELS)  # the architectures the schema allows are the ones built


def test_a_task_config_holds_its_own_fields_only(compose_cfg):
    assert set(compose_cfg("task=linear").task) == {
        "name",
        "n_dims",
        "w_scale",
        "kappa",
        "num_tasks",
        "num_training_examples",
        "curriculum",
    }
    assert compose_cfg("task=decision_tree").task.depth == 4 and "depth" not in compose_cfg("task=relu_2nn").task
    with pytest.raises(ConfigCompositionException):
        compose_cfg("task=linear", "task.depth=3")  # a field of another task
    with pytest.raises(ConfigCompositionException):
        compose_cfg("task=linear", "task.name=relu_2nn")  # a task's schema fixes its name


@dataclasses.dataclass
class Throwaway(Task):
    """A task added the way a user adds one: a registered class and a conf/task yaml."""

    depth: int = 6  # decision_tree's depth defaults to 4
    scale: float = 1.0

    def sample(self, gen, batch, n_active):
        return {"w": torch.randn(batch, self.n_dims, generator=gen) * self.scale}

    def apply(self, params, xs, noise_gen=None):
        return torch.tanh(xs @ params["w"].unsqueeze(-1)).squeeze(-1) * self.depth

    @property
    def normaliser(self):
        return float(self.depth**2)


@pytest.fixture
def throwaway_conf(tmp_path):
    """A copy of conf/ with task/throwaway.yaml, and Throwaway registered while the test runs."""
    register("throwaway")(Throwaway)
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "task" / "throwaway.yaml").write_text("defaults:\n  - throwaway_schema\n\nname: throwaway\nscale: 2.0\n")
    register_schemas()
    yield conf
    del TASKS["throwaway"]


def test_a_new_task_with_a_field_of_another_tasks_name_keeps_its_default(throwaway_conf):
    def composed(*overrides):
        with initialize_config_dir(config_dir=str(throwaway_conf), version_base=None):
            return compose(config_name="train", overrides=["model=tiny", *overrides])

    new, tree = composed("task=throwaway"), composed("task=decision_tree")
    assert (new.task.depth, new.task.scale, tree.task.depth) == (6, 2.0, 4)
    assert "split_dims" not in new.task and "scale" not in tree.task
    check_config(new)
    task = task_from_config(new.task)
    assert isinstance(task, Throwaway) and (task.depth, task.scale) == (6, 2.0)
    assert composed("task=throwaway", "task.depth=3").task.depth == 3
    with pytest.raises(ConfigCompositionException):
        composed("task=throwaway", "task.depth=three")


def test_yamls_hold_only_what_differs_from_the_defaults():
    for group in ("task", "model"):
        for path in (CONF / group).glob("*.yaml"):
            defaults = schema_defaults(path.stem if group == "task" else "linear")[group]
            values = yaml.safe_load(path.read_text())
            same = [
                key for key, value in values.items() if key not in ("name", "defaults") and defaults.get(key) == value
            ]
            assert same == [], f"{path.name} restates defaults: {same}"


def test_a_config_saved_before_a_key_existed_reads_with_its_default(compose_cfg):
    saved = plain(compose_cfg("task=linear"))
    del saved["model"]["d_state"], saved["trainer"]["decay_steps"]
    assert migrated(saved) == plain(compose_cfg("task=linear"))


def test_a_config_saved_with_every_tasks_fields_reads_with_its_own(compose_cfg):
    saved = plain(compose_cfg("task=linear"))
    # before each task had a schema of its own, every task config held every task's fields
    saved["task"] |= {"depth": 4, "hidden": 100, "sparsity": 3, "split_dims": "all", "noise_std": 1.0}
    assert migrated(saved) == plain(compose_cfg("task=linear"))
