"""Every notebook runs top to bottom in small mode."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import SHARED

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One embedding cache for all notebooks: they embed the same small slices."""
    return tmp_path_factory.mktemp("notebook-cache")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch, shared_cache):
    monkeypatch.setenv("VRM_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("VRM_CACHE", str(shared_cache))
    monkeypatch.setenv("VRM_SHARED_DATA", str(SHARED))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
