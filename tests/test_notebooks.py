"""The notebooks execute from top to bottom (small settings via MIXGYM_NOTEBOOK_QUICK=1) and are
what ``notebooks/_build.py`` writes."""

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
# what a notebook must print, beyond running without an error
PRINTED = {"hf_trainer.ipynb": ["same decisions: True | same final weights: True", "same examples per domain: True"]}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXGYM_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "commit notebooks stripped"
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    printed = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "stream")
    for line in PRINTED.get(path.name, []):
        assert line in printed, f"{path.name} did not print {line!r}"


def test_notebooks_match_build_script() -> None:
    spec = importlib.util.spec_from_file_location("notebooks_build", FOLDER / "_build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    built = build.build()
    assert sorted(built) == [p.name for p in NOTEBOOKS], "every notebook comes from notebooks/_build.py"
    for name, expected in built.items():
        committed = nbformat.read(FOLDER / name, as_version=4)
        cells = [(c.cell_type, c.source) for c in committed.cells]
        assert cells == [(c.cell_type, c.source) for c in expected.cells], f"{name} differs from notebooks/_build.py: run it"
