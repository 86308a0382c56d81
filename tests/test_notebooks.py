"""Every notebook runs top to bottom in small mode, from scratch (its committed outputs cleared), and is
committed executed: outputs present, every figure under 1 MB, and a sentence after every figure."""

import base64
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import SHARED

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.slow
MAX_FIGURE_BYTES = 1 << 20


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One embedding cache for all notebooks: they embed the same small slices."""
    return tmp_path_factory.mktemp("notebook-cache")


def _figures(cell) -> list[bytes]:
    return [base64.b64decode(o["data"]["image/png"]) for o in cell.get("outputs", [])
            if o.get("output_type") in ("display_data", "execute_result") and "image/png" in o.get("data", {})]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_shows_its_story(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "commit the notebook executed (small mode)"
    for i, cell in enumerate(nb.cells):
        figures = _figures(cell)
        assert all(len(f) < MAX_FIGURE_BYTES for f in figures), f"cell {i}: a figure over 1 MB"
        later = nb.cells[i + 1:]
        next_code = next((j for j, c in enumerate(later) if c.cell_type == "code"), None)
        if figures and next_code is not None:
            between = later[:next_code]
            assert any(c.cell_type == "markdown" and c.source.strip() for c in between), \
                f"cell {i} draws a figure: say what to see in it before the next code cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_from_scratch(path, tmp_path, monkeypatch, shared_cache):
    monkeypatch.setenv("VRM_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("VRM_CACHE", str(shared_cache))
    monkeypatch.setenv("VRM_SHARED_DATA", str(SHARED))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
