"""The reproduction machinery: steps saved on seed-mean curves, bootstrap intervals, verdicts,
the rank correlation between two grids, and the whole chain on a real (tiny) grid."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mixgym.bench import load_config, run_bench
from mixgym.bench.report import steps_to_reach
from mixgym.bench.reproduce import (
    CLAIMS,
    Claim,
    Grid,
    Measurement,
    bootstrap,
    claims_markdown,
    measure,
    plot_finals,
    plot_ranks,
    spearman,
    spearman_markdown,
    steps_saved,
    verdict,
)

STEPS = np.arange(0, 101, 10)


def curves(values: list[np.ndarray]) -> pd.DataFrame:
    """Per-seed curves (columns: seeds) indexed by optimizer step."""
    return pd.DataFrame({seed: v for seed, v in enumerate(values)}, index=STEPS)


def test_reaching_a_value_means_staying_there_unless_asked_for_the_first_touch() -> None:
    curve, steps = np.array([1.0, 0.5, 0.7, 0.4, 0.45]), np.array([0, 10, 20, 30, 40])
    assert steps_to_reach(curve, steps, 0.5) == 30  # the dip at step 10 does not last
    assert steps_to_reach(curve, steps, 0.5, stay=False) == 10
    assert steps_to_reach(curve, steps, 2.0) == 0
    assert np.isnan(steps_to_reach(curve, steps, 0.3)) and np.isnan(steps_to_reach(curve, steps, 0.3, stay=False))
    assert np.isnan(steps_to_reach(np.array([0.2, 0.6]), steps[:2], 0.5))  # it came back above


def test_steps_saved_to_the_final_and_to_the_best_value() -> None:
    reference = curves([np.linspace(1.0, 0.5, 11)] * 2)  # reaches 0.5 at step 100
    faster = curves([np.linspace(1.0, 0.25, 11)] * 2)  # 0.5 at step 66.7 -> first <= at step 70
    assert steps_saved(faster, reference, "final") == pytest.approx(30.0)
    assert np.isnan(steps_saved(reference + 0.1, reference, "final"))  # never reached
    bumpy = curves([np.r_[np.linspace(1.0, 0.4, 6), np.full(5, 0.6)]])  # best 0.4 at step 50, then worse
    assert steps_saved(faster[[0]], bumpy, "best") == pytest.approx(100 * (1 - 80 / 50))  # 0.4 first at step 80
    with pytest.raises(ValueError, match="target must be 'final' or 'best'"):
        steps_saved(faster, reference, "last")


def test_bootstrap_is_paired_seeded_and_counts_misses() -> None:
    rng = np.random.default_rng(0)
    reference = curves([np.linspace(1.0, 0.5, 11) + rng.normal(0, 0.01, 11) for _ in range(5)])
    faster = curves([np.linspace(1.0, 0.3, 11) + rng.normal(0, 0.01, 11) for _ in range(5)])
    reached, low, high = bootstrap(faster, reference, "final", resamples=200)
    assert reached == 1.0 and 0 < low <= steps_saved(faster, reference) <= high
    assert bootstrap(faster, reference, "final", resamples=200) == (reached, low, high)
    reached, low, high = bootstrap(reference + 1.0, reference, "final", resamples=50)
    assert reached == 0.0 and low == high == -100.0


def measurement(**fields: object) -> Measurement:
    base = dict(
        claim=CLAIMS[0], grid="g", reference="natural", saved=30.0, low=10.0, high=50.0, reached=1.0,
        saved_vs_natural=30.0, saved_vs_uniform=5.0, uniform_low=2.0, uniform_high=8.0, final_vs_natural=-5.0,
        final_vs_uniform=-1.0,
        tv_agent=0.2, tv_natural=0.46, verdict="",
    )
    return Measurement(**{**base, **fields})


def test_verdicts() -> None:
    assert verdict(measurement()) == "reproduced"
    assert verdict(measurement(saved=5.0, low=1.0)) == "smaller gain (5% vs 19% claimed)"
    assert verdict(measurement(low=-5.0)) == "not reproduced: no difference beyond noise"
    assert verdict(measurement(saved=np.nan)).startswith("not reproduced: slower")
    assert verdict(measurement(saved=-20.0, low=-40.0, high=-10.0)).startswith("not reproduced: slower")
    moved = "reproduced; its gain over natural is explained by moving toward uniform"
    assert verdict(measurement(uniform_low=-3.0)) == moved  # uniform does as well within noise
    assert verdict(measurement(uniform_low=-3.0, tv_agent=0.5)) == "reproduced"  # further from uniform than natural
    ablation = Claim("ablation", "acodm", "acodm-frozen-actor", "final", None, "p")
    assert verdict(measurement(claim=ablation)) == "the learned agent is faster"
    assert verdict(measurement(claim=ablation, saved=np.nan)) == "the learned agent is slower"


def test_the_chain_on_a_real_grid(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "name: mini\nmode: non-proxy\nseeds: [0, 1]\nagents: [odm, exp3]\nrewards: [alignment]\n"
        "backends: {pile22: {task: pile22, total_steps: 200}}\nenv: {steps_per_action: 20}\n"
    )
    run_bench(load_config(tmp_path / "config.yaml"), tmp_path, workers=1, progress=False)
    loaded = Grid.load(tmp_path)
    assert loaded.agents == ["exp3", "natural", "odm", "uniform"]
    assert list(loaded.curves("odm", "domain-mean").columns) == [0, 1]
    assert loaded.curves("odm", "domain-mean").index[-1] == 200
    assert loaded.mixture_tv("natural") > 0.4 > loaded.mixture_tv("uniform")
    m = measure(loaded, CLAIMS[0])
    assert m.reference == "natural" and m.grid == "mini (2 seeds)" and m.verdict
    natural, odm = loaded.final("natural", "domain-mean"), loaded.final("odm", "domain-mean")
    assert m.final_vs_natural == pytest.approx(100 * (odm / natural - 1))
    assert loaded.next_best("odm", "domain-mean") in ("exp3", "natural")
    text = claims_markdown([m])
    assert "| ODM: 19% fewer iterations than natural (claimed 19%) | mini (2 seeds) | natural |" in text
    assert "arXiv:2312.02406" in text
    same = spearman(loaded, loaded)
    assert same.rho == pytest.approx(1.0) and 1 / 24 <= same.p_value <= 2 / 24  # 4 agents: 1 of 4! orders (2 with a tie)
    assert "Spearman's rho = +1.00 over 4 agents" in spearman_markdown(same, "a", "b")
    assert plot_ranks(same, "a", "b", tmp_path / "ranks.png").stat().st_size > 5_000
    assert list(loaded.finals("odm", "domain-mean").index) == [0, 1]
    assert plot_finals([loaded], ["domain-mean", "natural"], tmp_path / "finals.png").stat().st_size > 5_000
    with pytest.raises(ValueError, match="no agent 'hds'; it has exp3, natural, odm, uniform"):
        loaded.curves("hds", "domain-mean")
    with pytest.raises(ValueError, match="holds no finished cell"):
        Grid.load(tmp_path, backend="elsewhere")
