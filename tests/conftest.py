"""Test-wide settings: no hub access, and caches kept out of the user's home."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXGYM_CACHE", str(tmp_path_factory.getbasetemp() / "mixgym-cache"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (opt in with ``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")`` or as an argument): tiny models on a shared
    2-core machine run ~20x slower with two contending threads."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
