"""Test-wide fixtures: caches kept out of the user's home (environment: the root conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXGYM_CACHE", str(tmp_path_factory.getbasetemp() / "mixgym-cache"))
