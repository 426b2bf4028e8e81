"""Longer checks (`make test-slow`): the claims BENCHMARKS.md makes, at full size."""

import numpy as np
import pytest

from mixgym.cli import main
from mixgym.llm_backend.oracle import schedule_objective, search_schedule
from mixgym.llm_backend.toy import ToyBackend, ToyConfig

pytestmark = pytest.mark.slow


def test_a_two_phase_schedule_beats_the_static_oracle_on_held_out_seeds() -> None:
    config = ToyConfig()
    search = tuple(range(5))
    static = search_schedule(config, phases=1, seeds=search)
    schedule = search_schedule(config, phases=2, seeds=search)
    backend = ToyBackend(config)
    heldout = range(100, 120)
    gain = np.array([schedule_objective(backend, static.mixtures, (s,)) - schedule_objective(backend, schedule.mixtures, (s,)) for s in heldout])
    assert gain.mean() > 2 * gain.std(ddof=1) / np.sqrt(len(gain))  # better by more than two standard errors
    uniform = np.mean([schedule_objective(backend, np.full((1, 5), 0.2), (s,)) for s in heldout])
    assert schedule_objective(backend, static.mixtures, tuple(heldout)) < 0.9 * uniform


def test_the_full_demo_runs(tmp_path) -> None:
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "demo.png").stat().st_size > 0
