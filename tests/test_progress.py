"""Progress where work is long: the HF backend's construction and decisions, the bench's checks."""

import sys

import numpy as np
import pytest

from mixgym.bench import parse_config
from mixgym.bench.config import validate
from mixgym.llm_backend.progress import shown


def test_bars_show_where_someone_watches_and_an_option_silences_them(monkeypatch):
    import types

    assert shown(True) and not shown(False)
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not shown(None)  # pytest's captured stderr is no terminal, and no notebook kernel runs here
    kernel = types.SimpleNamespace(get_ipython=lambda: types.SimpleNamespace(kernel=object()))
    monkeypatch.setitem(sys.modules, "IPython", kernel)
    assert shown(None)  # a Jupyter kernel: tqdm.auto draws its widget


def test_hf_backend_shows_each_stage_and_each_decision(capsys):
    pytest.importorskip("transformers")
    from mixgym.llm_backend.hf import HFBackend

    options = dict(model="pythia-tiny", total_steps=4, seq_len=32, micro_batch_size=2, grad_accumulation=1)
    backend = HFBackend(progress=True, **options)
    backend.train(np.full(len(backend.domains), 1 / len(backend.domains)), 2)
    err = capsys.readouterr().err
    for stage in ("loading the corpus", "tokenizer", "tokenising", "building the model", "decision: 2 optimizer steps"):
        assert stage in err
    quiet = HFBackend(progress=False, **options)
    quiet.train(np.full(len(quiet.domains), 1 / len(quiet.domains)), 2)
    assert capsys.readouterr().err == ""
    assert quiet.config.fingerprint() == backend.config.fingerprint()  # what is shown changes no result


def test_bench_validation_shows_its_checks(capsys):
    grid = parse_config({"seeds": [0], "agents": ["exp3", "odm"], "rewards": ["eval_loss"],
                         "backends": {"a": {"num_domains": 3}, "b": {"num_domains": 4}}})
    validate(grid, progress=True)
    assert "checking the grid" in capsys.readouterr().err
