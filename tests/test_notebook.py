"""examples/playground.ipynb runs from top to bottom with a real kernel, and its committed copy
holds the figures it draws."""

import shlex
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "examples" / "playground.ipynb"


def figures(nb) -> int:
    return sum(
        "image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )


def test_the_committed_notebook_shows_its_figures():
    assert figures(nbformat.read(NOTEBOOK, as_version=4)) >= 5


@pytest.mark.slow
def test_the_playground_runs_in_under_three_minutes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    start = time.perf_counter()
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert time.perf_counter() - start < 180
    assert figures(nb) >= 5 and not [
        out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"
    ]


def test_the_commands_the_notebook_gives_run_as_written(tmp_path):
    """Each `python -m minicl.*` command of the notebook's text runs, on 16 prompts (RUN: the shipped
    quick model), in a fresh directory."""
    from tests.test_docs import commands

    given = [command for where, command in commands() if where.endswith(".ipynb")]
    assert given
    for command in given:
        words = shlex.split(command.replace("run=RUN", "run=pretrained:quick"))
        done = subprocess.run(
            [sys.executable, *words[1:], "n_prompts=16"], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
