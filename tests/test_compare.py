import json
import subprocess
import sys

import pytest

from minicl.compare import compare, group_runs
from minicl.train import train


@pytest.fixture
def runs(tiny_cfg, tmp_path):
    """Three tiny runs: two seeds at one rate, one seed at another."""
    made = {}
    for name, overrides in {
        "a0": ["trainer.lr=1e-3"],
        "a1": ["trainer.lr=1e-3", "trainer.seed=1"],
        "b0": ["trainer.lr=2e-3", "trainer.progress=true"],
    }.items():
        train(tiny_cfg(*overrides), tmp_path / "sweep" / name)
        made[name] = tmp_path / "sweep" / name
    return made


def test_compare_groups_seeds_and_writes_figures_and_a_table(runs, tmp_path):
    table = compare([tmp_path / "sweep"], n_prompts=16, device="cpu")
    out = tmp_path / "sweep" / "compare"
    assert all((out / name).exists() for name in ("loss.png", "error.png", "table.md"))
    rows = [line for line in table.split("error at k")[0].splitlines() if line.startswith("| trainer.lr")]
    assert [row.split(" | ")[:3] for row in rows] == [
        ["| trainer.lr=0.001", "standard", "2"],
        ["| trainer.lr=0.002", "standard", "1"],
    ]
    assert rows[0].count("[") == 3 and "[" not in rows[1]  # seeds: mean [min, max] at k = d/2, d, 2d
    assert all((run / "metrics.json").exists() for run in runs.values())  # evaluated where missing
    assert (out / "sweep.png").exists() and "error at k = 5" in table  # one knob differs: the sweep's figure
    assert "| trainer.lr=0.001 | standard | " in table.split("error at k = 5")[1]
    reused = (runs["a0"] / "metrics.json").stat().st_mtime
    compare([runs["a0"], runs["b0"]], out=tmp_path / "two", n_prompts=16, device="cpu")
    assert (runs["a0"] / "metrics.json").stat().st_mtime == reused and (tmp_path / "two" / "table.md").exists()


def test_groups_ignore_seeds_and_knobs_that_do_not_change_results():
    configs = {
        f"r{i}": {"task": {"name": "linear", "n_dims": 5}, "trainer": {"seed": i, "progress": i == 0, "lr": lr}}
        for i, lr in enumerate([1e-3, 1e-3, 1e-4])
    }
    assert group_runs(configs) == {"trainer.lr=0.0001": ["r2"], "trainer.lr=0.001": ["r0", "r1"]}
    assert group_runs({"r": configs["r0"]}) == {"all runs": ["r"]}


def test_runs_of_other_tasks_or_dims_are_refused_by_name(tiny_cfg, tmp_path):
    train(tiny_cfg(), tmp_path / "lin")
    train(tiny_cfg("task.n_dims=4", "task.curriculum.dims.start=4", "task.curriculum.dims.end=4"), tmp_path / "lin4")
    with pytest.raises(ValueError, match="different tasks or dims.*lin: linear, 5 dims.*lin4: linear, 4 dims"):
        compare([tmp_path / "lin", tmp_path / "lin4"], n_prompts=16, device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no run"):
        compare([tmp_path / "empty"], device="cpu")


def test_the_command_line(runs, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "minicl.compare",
        str(runs["a0"]),
        str(runs["a1"]),
        f"out={tmp_path / 'cli'}",
        "n_prompts=16",
        "device=cpu",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| all runs | standard | 2 |" in result.stdout and (tmp_path / "cli" / "error.png").exists()
    assert json.loads((runs["a1"] / "metrics.json").read_text())["n_prompts"] == 16
