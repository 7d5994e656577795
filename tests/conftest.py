import pytest
import torch
from hydra import compose, initialize_config_dir

from minicl.config import register_schemas

CONF = str((__import__("pathlib").Path(__file__).parents[1] / "conf").resolve())


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides, config_name="train") -> the composed DictConfig."""
    register_schemas()

    def _compose(*overrides, config_name="train"):
        with initialize_config_dir(config_dir=CONF, version_base=None):
            return compose(config_name=config_name, overrides=list(overrides))

    return _compose


@pytest.fixture
def tiny_cfg(compose_cfg):
    """A run config small enough for a test: linear task, 5 dims, 11 points, tiny model."""

    def _tiny(*overrides):
        return compose_cfg(
            "task=linear", "experiment=quick", "task.curriculum.points.start=11", "task.curriculum.points.end=11",
            "model.n_positions=11", "trainer.steps=6", "trainer.checkpoint_every=2", "trainer.log_every=2",
            "trainer.eval_prompts=64", "trainer.progress=false", *overrides,
        )

    return _tiny
