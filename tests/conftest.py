"""Test-wide fixtures: caches kept out of the user's home (environment: the root conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXGYM_CACHE", str(tmp_path_factory.getbasetemp() / "mixgym-cache"))


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine torch's
    thread pool stalls (tens of times slower) when the other core is busy."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
