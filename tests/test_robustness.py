"""Crash-exact resume under SIGKILL, faults during training, and DDP through torchrun."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import minicl.checkpoint
from minicl.tasks import PromptSampler
from minicl.train import train

QUICK = ["task=linear", "experiment=quick", "task.curriculum.points.start=11", "task.curriculum.points.end=11",
         "model.n_positions=11", "trainer.eval_prompts=32", "trainer.progress=false", "trainer.device=cpu"]


def train_cmd(run_dir, *overrides):
    return [sys.executable, "-m", "minicl.train", *QUICK, f"hydra.run.dir={run_dir}", *overrides]


def logged_steps(run_dir) -> int:
    try:
        return len((run_dir / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_sigkill_at_several_points_then_resume_is_bit_exact(tmp_path):
    overrides = ["trainer.steps=60", "trainer.checkpoint_every=1", "trainer.log_every=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    whole = subprocess.run(train_cmd(tmp_path / "whole", *overrides), env=env, capture_output=True, timeout=300)
    assert whole.returncode == 0, whole.stderr.decode()[-2000:]
    killed = tmp_path / "killed"
    for kill_at in (5, 23, 41):  # kill once the log shows this many steps: mid-step or mid-checkpoint
        proc = subprocess.Popen(train_cmd(killed, *overrides), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while logged_steps(killed) < kill_at and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert minicl.checkpoint.latest_checkpoint(killed)["step"] >= kill_at - 1
    final = subprocess.run(train_cmd(killed, *overrides), env=env, capture_output=True, timeout=300)
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    a = torch.load(tmp_path / "whole" / "state.pt", weights_only=True)["model"]
    b = torch.load(killed / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))  # the log has each step once, none lost, none doubled


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
    state = minicl.checkpoint.latest_checkpoint(tmp_path)
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


def test_unwritable_run_directory_is_found_at_start(tiny_cfg, tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OSError):
        train(tiny_cfg(), tmp_path / "a_file" / "run")


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
    assert minicl.checkpoint.latest_checkpoint(tmp_path)["step"] == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_torchrun_two_processes_match_one(tmp_path):
    overrides = ["trainer.steps=50", "trainer.log_every=1", "trainer.checkpoint_every=25"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run(train_cmd(tmp_path / "one", *overrides), env=env, capture_output=True, timeout=300)
    assert one.returncode == 0, one.stderr.decode()[-2000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "minicl.train", *QUICK, f"hydra.run.dir={tmp_path / 'two'}", *overrides]
    two = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert two.returncode == 0, two.stderr.decode()[-3000:]

    def losses(run):
        return [json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    assert len(losses("two")) == 50
    assert losses("two") == pytest.approx(losses("one"), abs=1e-4)
    resumed = subprocess.run([*cmd[:-3], "trainer.steps=60", *overrides[1:]], env=env, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert b"resuming" in resumed.stdout and len(losses("two")) == 60
