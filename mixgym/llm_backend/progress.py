"""Progress bars for the HF backend's long work: corpus loading, tokenizer training, each decision.

`tqdm.auto`: a notebook renders a widget, a terminal a text bar on stderr. ``enabled=None`` (the
backend's default, ``HFConfig.progress``) shows them where someone watches -- stderr is a
terminal, or the code runs in a Jupyter kernel -- and not in logs, CI or bench workers;
``False`` silences them, ``True`` forces them.

>>> with stages(["a", "b"], enabled=False) as advance:
...     advance("a")
...     advance("b")
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def shown(enabled: bool | None) -> bool:
    """Whether to draw bars: `enabled`, or, for None, whether someone is watching."""
    if enabled is not None:
        return bool(enabled)
    return bool(getattr(sys.stderr, "isatty", lambda: False)()) or _in_a_notebook()


def _in_a_notebook() -> bool:
    """Whether this process is a Jupyter kernel (an IPython shell with a kernel), not merely a
    process that imported ipykernel."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return getattr(shell, "kernel", None) is not None


def bar(total: int, description: str, enabled: bool | None, leave: bool = True) -> Any:
    """A `tqdm.auto` bar of `total` units (a no-op bar when not shown)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, disable=not shown(enabled), leave=leave, dynamic_ncols=True)


@contextlib.contextmanager
def stages(names: Sequence[str], enabled: bool | None, title: str = "mixgym hf backend") -> Iterator[Callable[[str], None]]:
    """One bar over named stages; ``advance(name)`` shows that stage as started (the previous
    ones done)."""
    progress = bar(len(names), title, enabled)
    started = [False]

    def advance(name: str) -> None:
        if started[0]:
            progress.update(1)
        started[0] = True
        progress.set_description(f"{title}: {name}")

    try:
        yield advance
        if started[0]:
            progress.update(1)
    finally:
        progress.close()
