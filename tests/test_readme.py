"""The README's promises: its two commands come first and its Python example runs as written."""

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
