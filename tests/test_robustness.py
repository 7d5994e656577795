"""Crash-exact resume under SIGKILL, faults during training, and DDP through torchrun."""

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

import minicl.rundir
from minicl.tasks import PromptSampler
from minicl.train import train
from tests.helpers import logged, train_command

ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")


def logged_steps(run_dir) -> int:
    try:
        return len((run_dir / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_sigkill_at_several_points_then_resume_is_bit_exact(tmp_path):
    overrides = ["trainer.steps=60", "trainer.checkpoint_every=1", "trainer.log_every=1"]
    env = ONE_THREAD
    whole = subprocess.run(train_command(tmp_path / "whole", *overrides), env=env, capture_output=True, timeout=300)
    assert whole.returncode == 0, whole.stderr.decode()[-2000:]
    killed = tmp_path / "killed"
    for kill_at in (5, 23, 41):  # kill once the log shows this many steps: mid-step or mid-checkpoint
        proc = subprocess.Popen(
            train_command(killed, *overrides), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.time() + 120
        while logged_steps(killed) < kill_at and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert minicl.rundir.latest_checkpoint(killed)["step"] >= kill_at - 1
    final = subprocess.run(train_command(killed, *overrides), env=env, capture_output=True, timeout=300)
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    a = torch.load(tmp_path / "whole" / "state.pt", weights_only=True)["model"]
    b = torch.load(killed / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert logged(killed) == list(range(1, 61))  # the log has each step once, none lost, none doubled


def nan_after(monkeypatch, bad_step: int):
    calls = {"n": 0}
    sample = PromptSampler.sample

    def poisoned(self, *args, **kwargs):
        xs, ys = sample(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == bad_step + 1:
            ys = ys * float("nan")
        return xs, ys

    monkeypatch.setattr(PromptSampler, "sample", poisoned)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    nan_after(monkeypatch, bad_step=5)
    with pytest.raises(FloatingPointError, match="non-finite loss at step 5"):
        train(tiny_cfg("trainer.steps=10", "trainer.checkpoint_every=2", "trainer.log_every=2"), tmp_path)
    state = minicl.rundir.latest_checkpoint(tmp_path)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_non_finite_step_can_be_skipped_and_counted(tiny_cfg, tmp_path, monkeypatch):
    nan_after(monkeypatch, bad_step=3)
    model = train(tiny_cfg("trainer.steps=6", "trainer.on_nonfinite=skip"), tmp_path)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["skipped"] == 1


def test_full_disk_is_found_at_start(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.disk_usage", lambda path: type("Usage", (), {"free": 1000})())
    with pytest.raises(OSError, match="has 0.0 MB free; its checkpoints need about"):
        train(tiny_cfg(), tmp_path)
    assert not (tmp_path / "state.pt").exists()


def test_unwritable_run_directory_is_found_at_start(tiny_cfg, tmp_path, monkeypatch):
    write_bytes = Path.write_bytes

    def refused(path, data):  # as a read-only directory refuses every new file (root ignores chmod)
        if path.parent == tmp_path:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", refused)
    with pytest.raises(PermissionError, match=f"cannot write to the run directory {tmp_path}: Permission denied"):
        train(tiny_cfg(), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == []  # found before any step or log line


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tiny_cfg, tmp_path, monkeypatch):
    save, count = torch.save, {"n": 0}

    def failing_save(obj, f, *args, **kwargs):
        count["n"] += 1
        if count["n"] == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="could not write the checkpoint of step 4 .*No space left.*intact"):
        train(tiny_cfg("trainer.steps=6"), tmp_path)
    monkeypatch.setattr(torch, "save", save)
    assert minicl.rundir.latest_checkpoint(tmp_path)["step"] == 2
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "arch", ["transformer", *(pytest.param(a, marks=pytest.mark.slow) for a in ("lstm", "mamba", "mambaformer"))]
)
def test_torchrun_two_processes_match_one_and_resume(tmp_path, arch):
    overrides = [f"model.arch={arch}", "trainer.log_every=1", "trainer.checkpoint_every=3"]
    if arch != "transformer":  # the recurrent ones are slower per step: a narrower model
        overrides += ["model.n_layer=1", "model.n_embd=16"]
    one = subprocess.run(train_command(tmp_path / "one", *overrides), env=ONE_THREAD, capture_output=True, timeout=300)
    assert one.returncode == 0, one.stderr.decode()[-2000:]
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    two = subprocess.run(
        train_command(tmp_path / "two", *overrides, launcher=torchrun), env=ONE_THREAD, capture_output=True, timeout=300
    )
    assert two.returncode == 0, two.stderr.decode()[-3000:]
    assert logged(tmp_path / "two") == list(range(1, 7))
    assert logged(tmp_path / "two", "loss") == pytest.approx(logged(tmp_path / "one", "loss"), abs=1e-4)
    resumed = subprocess.run(
        train_command(tmp_path / "two", *overrides, "trainer.steps=9", launcher=torchrun),
        env=ONE_THREAD,
        capture_output=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert b"resuming" in resumed.stdout and logged(tmp_path / "two") == list(range(1, 10))
