"""docs/tutorial.ipynb runs top to bottom (its quick version, as CI can afford), and its committed outputs
come from today's seqrev."""

import os

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # a fresh Jupyter kernel

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


def tagged_output(notebook, tag: str) -> str:
    cell = next(c for c in notebook.cells if tag in c.get("metadata", {}).get("tags", []))
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_the_quick_version_runs_in_a_fresh_kernel_and_matches_the_committed_outputs(tmp_path, monkeypatch):
    committed = nbformat.read(NOTEBOOK, as_version=4)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("SEQREV_NOTEBOOK_QUICK", "1")  # the kernel inherits it
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on any cell's error
    assert "quick=True" in tagged_output(notebook, "parameters")
    first = next(c for c in notebook.cells if c.cell_type == "code")
    said = tagged_output(notebook, "install")  # the first code cell installs seqrev only where it is missing
    assert "install" in first.metadata.get("tags", []) and said.startswith("seqrev ") and said.endswith("installed\n")
    # the wirings and their parameter counts the committed notebook shows are today's
    assert tagged_output(notebook, "wirings") == tagged_output(committed, "wirings") != ""
    # a run's printout shown once (seqrev.fit prints it, as the command line does); the table, a line a run
    assert tagged_output(notebook, "one_run").count("trainable parameters") == 1
    table = tagged_output(notebook, "table")
    assert "trainable parameters" not in table and table.count("test accuracy") == 2
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the report's plot, the per-position picture, the attention heatmap
    assert os.path.isfile(tmp_path / "outputs" / "notebook" / "attention_T16" / "attention.png")


def test_the_committed_notebook_carries_a_full_runs_outputs():
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert "quick=False" in tagged_output(committed, "parameters")
    assert all(c.get("outputs") for c in committed.cells if c.cell_type == "code")
    assert not any(o.get("output_type") == "error" for c in committed.cells for o in c.get("outputs", []))
