"""What each process of the distributed tests runs (`tests/test_distributed.py`).

`mixgym.llm_backend.distributed.launch` runs a scenario below on two fresh processes (a
``file://`` rendezvous, a timeout); each returns what the test asserts on.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

CONFIG = {
    "model": "pythia-tiny",
    "seq_len": 32,
    "micro_batch_size": 4,
    "grad_accumulation": 3,
    "total_steps": 6,
    "eval_sequences": 5,  # 3 + 2 chunks per process: uneven shares are combined exactly
}
"""The backend every scenario trains (global micro-batch of 4 = 2 per process)."""
MIXTURE = np.array([0.4, 0.3, 0.1, 0.1, 0.1])
ACTIONS = [np.array(a, dtype=np.float32) for a in ([0.5, -0.5, 0.0, 0.2, -0.2], [-1, 1, 0, 0, 0], [0.1, 0.1, 0.9, -0.9, 0])]
TIMEOUT_S = 60.0
"""The collectives' timeout in the scenarios."""


def _session(rank: int, world: int, rendezvous: str, job: str = "", timeout_s: float = TIMEOUT_S) -> Any:
    import torch

    from mixgym.llm_backend.distributed import session

    torch.set_num_threads(1)
    return session(job=job, timeout_s=timeout_s, init_method=rendezvous, rank=rank, world_size=world)


def _parameters(model: Any) -> dict[str, np.ndarray]:
    return {name: value.detach().double().numpy().copy() for name, value in model.state_dict().items()}


def same_run(rank: int, world: int, rendezvous: str, sketch: int | None = None) -> dict[str, Any]:
    """Train, evaluate, read gradients, checkpoint and restore, then a 3-decision MixingEnv
    run: every number rank 0 sees (the others report their final parameters)."""
    from mixgym.envs import MixingEnv
    from mixgym.llm_backend.distributed import hf_backend, serve

    with _session(rank, world, rendezvous):
        backend = hf_backend(**CONFIG, gradient_sketch_dim=sketch)
        if rank != 0:
            served = serve(backend)
            return {"served": served, "parameters": _parameters(backend.model)}
        out: dict[str, Any] = {"evaluate_at_start": backend.evaluate()}
        out["train"] = backend.train(MIXTURE, 2)
        out["gradients"] = backend.domain_gradients()
        out["evaluate"] = backend.evaluate()
        out["weights"] = backend.weight_stats()
        out["parameters_after_2"] = _parameters(backend.local.model)
        state = backend.state_dict()
        out["ranks_in_state"] = len(state["ranks"])
        out["continued"] = backend.train(MIXTURE, 2)
        backend.load_state_dict(state)
        out["replayed"] = backend.train(MIXTURE, 2)
        out["replayed_gradients"] = backend.domain_gradients()
        env = MixingEnv(backend=backend, reward="holistic", steps_per_action=2)
        steps = [env.reset(seed=3)]
        steps += [env.step(action) for action in ACTIONS]
        out["env"] = steps
        out["parameters"] = _parameters(backend.local.model)
        return out


def reference_run(sketch: int | None = None) -> dict[str, Any]:
    """`same_run` on one process, with `HFBackend` itself."""
    from mixgym.envs import MixingEnv
    from mixgym.llm_backend.hf import HFBackend

    backend = HFBackend(**CONFIG, gradient_sketch_dim=sketch)
    out: dict[str, Any] = {"evaluate_at_start": backend.evaluate()}
    out["train"] = backend.train(MIXTURE, 2)
    out["gradients"] = backend.domain_gradients()
    out["evaluate"] = backend.evaluate()
    out["weights"] = backend.weight_stats()
    out["parameters_after_2"] = _parameters(backend.model)
    backend.train(MIXTURE, 2)
    env = MixingEnv(backend=backend, reward="holistic", steps_per_action=2)
    steps = [env.reset(seed=3)]
    steps += [env.step(action) for action in ACTIONS]
    out["env"] = steps
    out["parameters"] = _parameters(backend.model)
    return out


class _DiesInTrain:
    """A replica whose process dies (exit code 1) in its `after`-th + 1 train call, at once
    or after hanging for `hang_s` seconds."""

    def __init__(self, backend: Any, after: int, hang_s: float) -> None:
        self.backend, self.after, self.hang_s, self.calls = backend, after, hang_s, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def train_plan(self, plan: np.ndarray) -> Any:
        self.calls += 1
        if self.calls > self.after:
            time.sleep(self.hang_s)
            os._exit(1)
        return self.backend.train_plan(plan)


def experiment_options() -> dict[str, Any]:
    """A checkpointed online run of exp3 on the HF backend, one optimizer step a decision."""
    return {"agent": "exp3", "env": {"backend": "hf", **CONFIG, "steps_per_action": 1}, "checkpoint_every": 1}


def lost_rank(
    rank: int, world: int, rendezvous: str, directory: str, die_after: int, hang_s: float = 0.0, collective_timeout_s: float = TIMEOUT_S
) -> dict[str, Any]:
    """Rank 0 runs the checkpointed experiment; rank 1 dies in its `die_after` + 1-th
    decision (after hanging `hang_s` s). Rank 0 reports the error it got, how long it took,
    and its last checkpoint."""
    from mixgym.checkpoint import CheckpointStore
    from mixgym.experiment import ExperimentConfig, run_experiment
    from mixgym.llm_backend.distributed import hf_backend, serve

    with _session(rank, world, rendezvous, timeout_s=collective_timeout_s):
        if rank != 0:
            backend = hf_backend(**CONFIG)
            serve(_DiesInTrain(backend, die_after, hang_s))
            return {}
        start = time.monotonic()
        try:
            run_experiment(ExperimentConfig(**experiment_options()), directory)
        except Exception as error:
            failure = f"{type(error).__name__}: {error}"
        else:
            failure = None
        latest = CheckpointStore(Path(directory) / "checkpoints").load_latest()
        return {"failure": failure, "seconds": time.monotonic() - start, "checkpoint_decisions": None if latest is None else latest[0]["decisions"]}


def resume(rank: int, world: int, rendezvous: str, directory: str) -> Any:
    """Resume the experiment in `directory` on every process; rank 0 returns its table."""
    from mixgym.experiment import ExperimentConfig, run_experiment
    from mixgym.llm_backend.distributed import hf_backend, serve

    with _session(rank, world, rendezvous):
        if rank != 0:
            return serve(hf_backend(**CONFIG))
        result = run_experiment(ExperimentConfig(**experiment_options()), directory, resume=True)
        return {"status": result.status, "decisions": result.results().decisions}


def bad_starts(rank: int, world: int, rendezvous: str) -> dict[str, str]:
    """The errors of a world size that does not divide the micro-batch, and of a process
    started with another configuration (rank 1: another seq_len, then another job)."""
    from mixgym.llm_backend.distributed import hf_backend

    errors = {}
    with _session(rank, world, rendezvous):
        for case, options in (
            ("indivisible", {**CONFIG, "micro_batch_size": 3}),
            ("other_config", {**CONFIG, "seq_len": 32 if rank == 0 else 16}),
        ):
            try:
                hf_backend(**options)
            except ValueError as error:
                errors[case] = str(error)
    with _session(rank, world, rendezvous + "-job", job="run A" if rank == 0 else "run B"):
        try:
            hf_backend(**CONFIG)
        except ValueError as error:
            errors["other_job"] = str(error)
    return errors
