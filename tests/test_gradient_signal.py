"""The per-domain gradient signal: exact sums by tensor hooks, the hashed JL sketch and its
stated error bound on the Gram matrix and the alignment scores, and the "auto" choice."""

import numpy as np
import pytest

from mixgym.envs.rewards import alignment_scores
from mixgym.llm_backend.gradient_signal import (
    AUTO_EXACT_LIMIT_BYTES,
    AUTO_SKETCH_DIM,
    HashedProjection,
    sketch_dim_for,
)

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from mixgym.llm_backend.hf import HFBackend  # noqa: E402

TINY = {"model": "pythia-tiny", "seq_len": 32, "micro_batch_size": 2, "grad_accumulation": 8, "total_steps": 10}
MIXTURE = np.array([0.4, 0.3, 0.1, 0.1, 0.1])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exact_rows() -> np.ndarray:
    """Real per-domain gradients: pythia-tiny after a few steps, exact sums (K=5, D=49,152)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    backend = HFBackend(**TINY, gradient_sketch_dim=None)
    backend.train(MIXTURE, 3)
    torch.set_num_threads(threads)
    return backend.domain_gradients()


def test_the_sketch_is_a_fixed_linear_map_with_plus_minus_one_entries() -> None:
    projection = HashedProjection(dim=1000, width=64, seed=7)
    basis = torch.eye(1000, dtype=torch.float64)
    matrix = projection.project(basis).T  # column i = S e_i
    assert set(np.unique(matrix.numpy())) == {-1.0, 0.0, 1.0}
    assert np.all((matrix != 0).sum(dim=0).numpy() == 1)  # one bucket per coordinate
    again = HashedProjection(dim=1000, width=64, seed=7).project(basis).T
    assert torch.equal(matrix, again)  # the same map every time: nothing random at run time
    x, y = torch.randn(1000, dtype=torch.float64), torch.randn(1000, dtype=torch.float64)
    out = torch.zeros(64, dtype=torch.float64)
    projection.add_(out, x[:600])
    projection.add_(out, x[600:], offset=600)  # blocks at offsets add up to the whole vector
    torch.testing.assert_close(out, matrix @ x)
    torch.testing.assert_close(projection.project(torch.stack([x + 2 * y]))[0], matrix @ x + 2 * (matrix @ y))


def test_the_gram_error_stays_within_the_stated_bound_on_real_gradients(exact_rows: np.ndarray) -> None:
    """Over 100 seeds of the projection: the Gram matrix is unbiased, each entry's variance
    is at most (|x|^2 |y|^2 + <x,y>^2) / r, |error| > 3 sqrt(2/r) |g_i| |g_j| happens in at
    most 1/9 of the cases (Chebyshev), and the alignment scores' RMS error is within the
    bound that follows: sqrt(2/r) (|g_i| sum_{j != i} |g_j| / mean_k |g_k| + |s_i|)."""
    width, seeds = 512, 100
    rows = torch.from_numpy(exact_rows)
    gram = exact_rows @ exact_rows.T
    norms = np.sqrt(np.diag(gram))
    scale = np.outer(norms, norms)
    sketches = [HashedProjection(exact_rows.shape[1], width, seed=seed).project(rows).numpy() for seed in range(seeds)]
    errors = np.stack([sketch @ sketch.T - gram for sketch in sketches])
    relative = errors / scale
    assert np.all(np.abs(relative.mean(axis=0)) < 4 * np.sqrt(2 / width) / np.sqrt(seeds)), relative.mean(axis=0)
    assert np.all(errors.var(axis=0) <= 1.5 * (scale**2 + gram**2) / width), (errors.var(axis=0) * width / (scale**2 + gram**2)).max()
    assert np.mean(np.abs(relative) > 3 * np.sqrt(2 / width)) <= 1 / 9

    exact_scores = alignment_scores(exact_rows)
    score_errors = np.stack([alignment_scores(sketch) - exact_scores for sketch in sketches])
    others = norms.sum() - norms
    bound = np.sqrt(2 / width) * (norms * others / norms.mean() + np.abs(exact_scores))
    assert np.all(np.sqrt((score_errors**2).mean(axis=0)) <= bound), (np.sqrt((score_errors**2).mean(axis=0)) / bound)


def test_the_sketched_signal_is_the_projection_of_the_exact_one() -> None:
    exact = HFBackend(**TINY, gradient_sketch_dim=None)
    sketched = HFBackend(**TINY, gradient_sketch_dim=256)
    exact.train(MIXTURE, 2)
    sketched.train(MIXTURE, 2)
    rows = exact.domain_gradients()
    got = sketched.domain_gradients()
    assert got.shape == (5, 256) and got.dtype == np.float64
    expected = HashedProjection(rows.shape[1], 256).project(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    state = sketched.state_dict()
    sketched.train(MIXTURE, 1)
    sketched.load_state_dict(state)
    np.testing.assert_array_equal(sketched.domain_gradients(), got)


def test_auto_keeps_exact_sums_below_the_limit_and_sketches_above() -> None:
    assert sketch_dim_for("auto", 5, 49_152) is None  # pythia-tiny: 1 MB
    assert sketch_dim_for("auto", 22, 3 * 384 * 1536) is None  # pythia-small, 22 domains: 156 MB
    assert sketch_dim_for("auto", 22, 3 * 2048 * 8192) == AUTO_SKETCH_DIM  # AC-ODM's 1B: 4.4 GB
    limit = AUTO_EXACT_LIMIT_BYTES // 4
    assert sketch_dim_for("auto", 1, limit) is None and sketch_dim_for("auto", 1, limit + 1) == AUTO_SKETCH_DIM
    assert sketch_dim_for(None, 22, 10**9) is None and sketch_dim_for(128, 2, 10) == 128


@pytest.mark.parametrize(("setting", "match"), [(0, "gradient_sketch_dim"), ("big", "gradient_sketch_dim"), (True, "gradient_sketch_dim")])
def test_bad_sketch_settings_are_refused(setting: object, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):  # a bool is of the wrong type: a TypeError
        HFBackend(**TINY, gradient_sketch_dim=setting)
    with pytest.raises(ValueError, match="sketch dimension"):
        HashedProjection(10, 0)
