import pytest
import torch

from tests.helpers import compose_config, tiny


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides, config_name="train") -> the composed DictConfig."""
    return compose_config


@pytest.fixture
def tiny_cfg():
    """tiny_cfg(*overrides): the small test run's config (tests/helpers.py TINY)."""
    return tiny
