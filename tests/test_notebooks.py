"""Every notebook runs top to bottom in smoke mode (CI=1: fewer epochs and draws)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    assert any(p.name == "01_quickstart.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for extra in ("mudata", "anndata"):   # the optional scverse extra (bayesfuse[scverse])
        if f"import {extra}" in source:
            pytest.importorskip(extra)
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code"), \
        f"{path.name} is committed with outputs; clear them (jupyter nbconvert --clear-output)."
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
