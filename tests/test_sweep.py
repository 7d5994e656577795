"""Many runs: Hydra multirun with the basic, joblib and submitit launchers."""

import os
import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from minicl.config import CONF, RESUMABLE_CHANGES
from tests.helpers import TINY, assert_final_eval_is_the_models, logged


def sweep(sweep_dir, *overrides):
    cmd = [
        sys.executable,
        "-m",
        "minicl.train",
        "-m",
        *TINY,
        "trainer.steps=2",
        "trainer.seed=0,1",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(path for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    assert [run.name.split("trainer.seed=")[1][0] for run in runs] == ["0", "1"]  # a directory per job, named by it
    for run in runs:
        assert_final_eval_is_the_models(run)
        assert logged(run) == [2]
    return runs, out.stdout


def test_a_basic_multirun_writes_a_run_per_job_and_rerunning_it_resumes_each(tmp_path):
    runs, _ = sweep(tmp_path)
    logs = [(run / "metrics.jsonl").read_text() for run in runs]
    _, stdout = sweep(tmp_path)
    assert stdout.count("resuming") == 2 and [(run / "metrics.jsonl").read_text() for run in runs] == logs


def test_joblib_runs_the_jobs_in_separate_processes_sharing_the_cores(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the [sweep] extra is not installed")
    _, stdout = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    jobs = re.findall(r"\((\d+) threads?, process (\d+)\)", stdout)
    assert len(jobs) == 2 and jobs[0][1] != jobs[1][1]
    cores = len(os.sched_getaffinity(0))
    assert {int(threads) for threads, _ in jobs} == {max(1, cores // 2)}


@pytest.mark.slow
def test_submitit_local_runs_the_sweep_and_the_slurm_config_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the [sweep] extra is not installed")
    sweep(tmp_path, "hydra/launcher=submitit_local")
    cmd = [
        sys.executable,
        "-m",
        "minicl.train",
        "hydra/launcher=slurm",
        "--cfg",
        "hydra",
        "--package",
        "hydra.launcher",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SlurmLauncher" in out.stdout and "gpus_per_node: 1" in out.stdout


def test_run_directories_are_named_by_the_overrides_that_change_results():
    excluded = OmegaConf.load(CONF / "train.yaml").hydra.job.config.override_dirname.exclude_keys
    assert set(excluded) == {f"trainer.{key}" for key in RESUMABLE_CHANGES - {"steps"}}
