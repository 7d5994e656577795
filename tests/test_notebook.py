"""examples/playground.ipynb runs from top to bottom with a real kernel, and its committed copy
holds the figures it draws."""

import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "examples" / "playground.ipynb"


def figures(nb) -> int:
    return sum(
        "image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )


def test_the_committed_notebook_shows_its_figures():
    assert figures(nbformat.read(NOTEBOOK, as_version=4)) >= 5


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
