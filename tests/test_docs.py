"""The README's and docs/'s promises: the two commands first, every code block runs (Python) or
parses (shell commands), the Trainer example is short and seeds before it builds the model, and
the first ten minutes need nothing the demo does not."""

import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mixgym.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [README, *PAGES]


def _blocks(path: Path, language: str) -> list[str]:
    return [textwrap.dedent(b) for b in re.findall(rf"^ *```{language}\n(.*?)^ *```", path.read_text(), flags=re.S | re.M)]


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.read_text().split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_every_page_is_in_the_docs_nav_and_the_readme_links_exist() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(f": {page.name}" in nav for page in PAGES)
    for link in re.findall(r"\]\((docs/[^)#]+)\)", README.read_text()):
        assert (ROOT / link).is_file(), link


def test_no_internal_issue_numbers_in_user_facing_text() -> None:
    for path in DOCUMENTS:
        assert not re.search(r"\bissues? #?\d+", path.read_text(), flags=re.I), path.name


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_python_block_runs(path: Path, one_torch_thread: None, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    for block in _blocks(path, "python"):
        exec(compile(block, str(path), "exec"), {})


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_shell_command_parses(path: Path) -> None:
    """`mixgym ...` lines parse with the real parser; `make X` names a target; a script run by
    path exists (the commands themselves take minutes to hours: the benchmarks run them)."""
    parser = build_parser()
    targets = set(re.findall(r"^([\w./-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    for block in _blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            words = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w)]  # VAR=value prefixes
            if not words:
                continue
            if words[0] == "mixgym":
                args = parser.parse_args(words[1:])
                assert callable(args.func), line
            elif words[0] == "make":
                assert words[1] in targets, line
            elif words[0] == "python" and words[1].endswith((".py",)):
                assert (ROOT / words[1]).is_file(), line
            elif words[0].startswith("examples/"):
                assert (ROOT / words[0]).is_file(), line


def test_the_trainer_example_is_short_and_seeds_before_it_builds_the_model() -> None:
    page = ROOT / "docs" / "own-trainer.md"
    block = next(b for b in _blocks(page, "python") if "MixtureCallback(" in b)
    code = [line for line in block.splitlines() if line.strip() and not line.startswith(("import ", "from ", "#"))]
    assert len(code) < 15, code
    assert sum("Mixture" in line or ".install(" in line for line in code) == 3  # the dataset, the callback, install()
    seeded = next(i for i, line in enumerate(code) if line.startswith("set_seed("))
    built = next(i for i, line in enumerate(code) if "from_config(" in line)
    assert seeded < built  # else two runs start from different weights and a resume check sees them differ


def test_examples_use_the_current_ids() -> None:
    """A -v0 id with a -v1 beside it prints Gymnasium's deprecation warning on every make."""
    shown = [ROOT / "examples", ROOT / "notebooks", *DOCUMENTS]
    files = [p for where in shown for p in ([where] if where.is_file() else where.rglob("*")) if p.suffix in (".py", ".md", ".ipynb", ".sh")]
    for path in files:
        assert not re.search(r"mixgym/Mixing(Holistic|22)?-v0", path.read_text()), path


def test_make_demo_prints_first_and_installs_only_the_core() -> None:
    makefile = (ROOT / "Makefile").read_text()
    demo = re.search(r"^demo: (.*)\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert demo.group(1).strip() == ".venv/core"
    assert demo.group(2).splitlines()[0].startswith("\t@echo")
    core = re.search(r"^\.venv/core: .*\n((?:\t.*\n)+)", makefile, flags=re.M).group(1)
    assert core.splitlines()[0].startswith("\t@echo")  # on screen in the first second, before pip
    assert re.search(r'pip install --progress-bar on -e \.\n', core)  # no extra, pip's progress shown
    assert "-q" not in core


def test_the_demo_runs_with_no_extra_installed(tmp_path: Path) -> None:
    extras = ["transformers", "datasets", "tokenizers", "peft", "ray", "tensorboard", "syllabus", "minari",
              "wandb", "torchrl", "tianshou", "skrl", "rl_zoo3", "optuna", "mkdocs"]
    code = (
        "import sys\n"
        f"for name in {extras!r}: sys.modules[name] = None  # as if not installed: importing it fails\n"
        "from mixgym.cli import main\n"
        f"sys.exit(main(['demo', '--quick', '--out', {str(tmp_path / 'demo')!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "demo" / "demo.png").is_file()


def test_the_cleanrl_script_follows_the_path_that_works() -> None:
    script = ROOT / "examples" / "clients" / "cleanrl.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    steps = ["pip\" install -q torch==2.13.0", '"gymnasium==0.29.1" "numpy<2" tyro tensorboard', 'install -q -e "$mixgym"',
             "PYTHONPATH=.", "--env-id mixgym:mixgym/Mixing-v1"]
    where = [text.rindex(step) for step in steps]
    assert where == sorted(where)  # torch first, then CleanRL's pins, then mixgym, then the run
