"""The README's promises: its two commands come first, its Python examples run as written, the Trainer one is short."""

import re
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.read_text().split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_every_python_example_in_the_readme_runs(one_torch_thread: None) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3, "README lost its python examples"
    for block in blocks:
        exec(compile(textwrap.dedent(block), str(README), "exec"), {})


def test_the_trainer_example_is_under_fifteen_lines_of_user_code() -> None:
    """Issue 15's bar: the callback shown in under 15 lines of user code (imports and comments aside)."""
    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if "MixtureCallback(" in b)
    code = [line for line in block.splitlines() if line.strip() and not line.startswith(("import ", "from ", "#"))]
    assert len(code) < 15, code
    assert sum("Mixture" in line or ".install(" in line for line in code) == 3  # the dataset, the callback, install()
