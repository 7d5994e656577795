import json
import os
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException

from minicl.train import train
from tests.helpers import logged

LOGGED = ["trainer.steps=3", "trainer.log_every=1", "trainer.checkpoint_every=2"]


def crash_after_last_log(run_dir):
    """As if the run died after logging step 3 but before its step-3 checkpoint: step 2's is the newest."""
    os.replace(run_dir / "state.prev.pt", run_dir / "state.pt")


def logged_losses(run_dir):
    return dict(zip(logged(run_dir), logged(run_dir, "loss")))


def test_tensorboard_events_hold_every_logged_step_once_across_a_resume(tiny_cfg, tmp_path):
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny_cfg("logger=tensorboard", *LOGGED), tmp_path)
    crash_after_last_log(tmp_path)
    train(tiny_cfg("logger=tensorboard", *LOGGED), tmp_path)  # resumes at step 2, redoes step 3
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("train/loss")
    assert [e.step for e in scalars] == [1, 2, 3]
    assert [e.value for e in scalars] == pytest.approx([logged_losses(tmp_path)[s] for s in (1, 2, 3)], rel=1e-6)
    assert "train/steps_per_s" in events.Tags()["scalars"]


def test_wandb_offline_writes_its_run_and_a_resume_continues_the_same_id(tiny_cfg, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the [wandb] extra is not installed")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = ("logger=wandb", "logger.mode=offline", *LOGGED)
    train(tiny_cfg(*cfg), tmp_path)
    run_id = json.loads((tmp_path / "tracking.json").read_text())["wandb_id"]
    crash_after_last_log(tmp_path)
    train(tiny_cfg(*cfg[:-2], "trainer.steps=4", "trainer.log_every=1", "trainer.checkpoint_every=2"), tmp_path)
    tracking = json.loads((tmp_path / "tracking.json").read_text())
    assert tracking == {"last_step": 4, "wandb_id": run_id}
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(run_id) for r in runs)  # one wandb run, written twice
    assert all(any(r.glob("*.wandb")) for r in runs)


def test_a_missing_extra_is_named_and_the_logger_is_not_part_of_the_run(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ImportError, match=r'logger=wandb needs its extra: pip install -e "\.\[wandb\]"'):
        train(tiny_cfg("logger=wandb"), tmp_path)
    with pytest.raises(ConfigCompositionException, match="logger.name=mlflow"):
        tiny_cfg("logger.name=mlflow")
    train(tiny_cfg(), tmp_path)  # the failed start left a resumable run; the logger does not change it


def test_a_result_is_dirty_when_anything_that_writes_one_has_changed(tmp_path):
    """git_commit marks -dirty for uncommitted edits to minicl/, conf/, examples/ or docs/render.py
    (examples/real_data.py writes the README's tables), not for docs or results."""
    from minicl.rundir import git_commit

    files = ["minicl/a.py", "conf/a.yaml", "examples/real_data.py", "docs/render.py", "docs/a.md", "README.md"]
    git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "0")
    assert not git_commit(tmp_path).endswith("-dirty")
    for name in files:
        (tmp_path / name).write_text("1\n")
        writes_results = name.startswith(("minicl/", "conf/", "examples/")) or name == "docs/render.py"
        assert git_commit(tmp_path).endswith("-dirty") == writes_results, name
        git("checkout", "-q", "--", name)
