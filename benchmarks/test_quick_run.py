"""The end-to-end quick run (README's first command): wall time and final error."""

import json
import time

import pytest
import torch
from hydra import compose, initialize_config_dir

from minicl.config import CONF, register_schemas
from minicl.train import train


def test_quick_run(benchmark, report, tmp_path):
    pytest.importorskip("transformers", reason="the reference loop needs `pip install -e .[reference]`")
    from tests.reference import OriginalModel, original_step

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("train", ["task=linear", "experiment=quick", "trainer.progress=false", "trainer.device=cpu"])
    start = time.perf_counter()
    benchmark.pedantic(lambda: train(cfg, tmp_path), rounds=1, iterations=1)
    wall = time.perf_counter() - start
    final = json.loads((tmp_path / "final_eval.json").read_text())
    # the original's loop at the same size, timed for 200 steps and scaled to the run's steps
    model = OriginalModel(5, 21, 64, 3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(200):
        original_step(model, opt, 64, 21, 5, "cpu")
    reference = (time.perf_counter() - start) * cfg.trainer.steps / 200
    report(
        "quick run end to end (8000 steps, CPU)",
        wall,
        reference,
        error_at_2d=final["transformer"],
        least_squares=final["least_squares"],
        reference_note="original loop, 200 steps scaled",
    )
    assert final["transformer"] <= 0.1
