"""One `HFBackend` run on several processes: torchrun, DDP, and rank 0 driving the rest.

Launch any `mixgym train` or `mixgym eval` with torchrun (one process per GPU; across
nodes with the c10d rendezvous)::

    torchrun --nproc_per_node=8 -m mixgym.cli train hds --mode online --env backend=hf ...

Layout of the job:

- Every process builds the same `HFBackend` (its replica of the run), trains with DDP and
  reads its own share of every micro-batch (`DataParallel`). At start the processes
  compare a hash of their command line, package versions and backend (configuration,
  tokenizer, corpus) and refuse to start if one differs.
- Rank 0 alone owns the environment, the agent, the checkpoints and the result tables. Its
  backend is a `DistributedBackend`: each call (reset, train, evaluate, state_dict,
  load_state_dict) is broadcast as a small command over a separate gloo process group, and
  then every process runs it together. For `train`, rank 0 draws the domain of every
  micro-batch slot and broadcasts that plan: in each slot every process trains the same
  domain, on its own rows of the slot's global micro-batch.
- What the processes combine: DDP averages parameter gradients (synchronised once per
  optimizer step, not per micro-batch); per-domain training losses and held-out loss sums
  are all-reduced; the per-domain gradient signal (`gradient_signal.DomainGradients`, tensor
  hooks that see each micro-batch's local gradient before DDP's reducer) is all-reduced
  once per `train` call; the token ids trained on are gathered to rank 0 (lexical
  diversity). Weight norms and `domain_gradients` are then read on rank 0 alone: the
  parameters are the same on every process.
- Checkpoints: rank 0 writes them. `state_dict` gathers every process's own part (torch RNG,
  data positions) into the checkpoint; `load_state_dict` broadcasts the shared part (model,
  optimizer, schedule) and hands each process its own part back.
- Failures: collectives have a timeout (``timeout_s``, `mixgym --dist-timeout`). A process
  that dies or stops answering makes rank 0's next collective fail with `RankLost`, which
  says so; the checkpoint store only ever holds complete checkpoints, so the last one
  written before the failure resumes the run (``--resume``) on a new job of the same size.

Numbers: with W processes, `HFConfig.micro_batch_size` is the global micro-batch (all
processes together; W must divide it), so a run on W processes trains the same sequences
in the same order as one process, and its losses, gradients and parameters equal the
single-process run's to float rounding (`tests/test_distributed.py`).

This module imports torch only when a session starts, so `make_backend` can ask for the
`current_session` cheaply.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.metadata
import inspect
import json
import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from mixgym.llm_backend.base import BackendInfo, Signal, TrainStats, WeightStats
from mixgym.llm_backend.replicas import share

DEFAULT_TIMEOUT_S = 1800.0
"""Seconds a collective (including a worker's wait for rank 0's next command) may take."""
_COMMUNICATION_MARKERS = ("gloo", "nccl", "connection", "timed out", "timeout", "socket")


class RankLost(RuntimeError):
    """A process of a distributed run died or stopped answering."""


def launched() -> bool:
    """True in a process of a multi-process job (torchrun sets ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Session:
    """This process's place in a distributed job (see `session`).

    Attributes:
        rank, world_size, local_rank: as torchrun numbers them.
        device: where collectives run: ``cuda:LOCAL_RANK`` (NCCL) or ``cpu`` (gloo).
        commands: the gloo process group that carries rank 0's commands and small objects.
        timeout_s: the collectives' timeout.
        job: a description of what this process was started to do (the command line);
            processes that differ in it refuse to train together.
    """

    rank: int
    world_size: int
    local_rank: int
    device: str
    commands: Any
    timeout_s: float
    job: str
    driver: DistributedBackend | None = field(default=None, repr=False)


_current: Session | None = None


def current_session() -> Session | None:
    """The session this process is in, if any."""
    return _current


@contextlib.contextmanager
def session(
    job: str = "",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    init_method: str = "env://",
    rank: int | None = None,
    world_size: int | None = None,
) -> Iterator[Session]:
    """Join the job: the default process group (NCCL on GPUs, gloo on CPUs) and a gloo group
    for commands. By default from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``...); `init_method`, `rank` and `world_size` set them
    otherwise (e.g. a ``file://`` rendezvous in tests). On leaving, rank 0 tells the other
    processes to stop (unless a process was lost) and the groups are destroyed."""
    global _current
    import torch
    import torch.distributed as dist

    if _current is not None:
        raise RuntimeError("this process is already in a distributed session")
    if timeout_s <= 0:
        raise ValueError(f"the collectives' timeout must be > 0 seconds, got {timeout_s!r}")
    rank = int(os.environ["RANK"]) if rank is None else rank
    world_size = int(os.environ["WORLD_SIZE"]) if world_size is None else world_size
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=init_method, rank=rank, world_size=world_size, timeout=timeout)
    commands = dist.new_group(backend="gloo", timeout=timeout)
    _current = Session(rank, world_size, local_rank, f"cuda:{local_rank}" if cuda else "cpu", commands, timeout_s, job)
    lost = False
    try:
        yield _current
    except RankLost:
        lost = True
        raise
    finally:
        driver, _current = _current.driver, None
        if driver is not None and not lost:
            with contextlib.suppress(RankLost):
                driver.close()
        dist.destroy_process_group()


def _communication_failure(error: BaseException) -> bool:
    """Whether `error` is a collective failing (gloo and NCCL raise RuntimeErrors naming
    themselves, a closed connection or a timeout), not an error of the model's own."""
    import torch.distributed as dist

    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    return any(marker in str(error).lower() for marker in _COMMUNICATION_MARKERS)


class DataParallel:
    """The DDP replica group of a session (`mixgym.llm_backend.replicas.Replicas`)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.rank, self.world_size, self.local_rank = session.rank, session.world_size, session.local_rank
        self._ddp: Any = None

    def agree(self, fingerprint: str) -> None:
        import torch
        import torch.distributed as dist
        import transformers

        versions = [importlib.metadata.version("mixgym"), torch.__version__, transformers.__version__]
        payload = json.dumps({"job": self.session.job, "backend": fingerprint, "versions": versions}, sort_keys=True)
        mine = hashlib.sha256(payload.encode()).hexdigest()[:16]
        hashes: list[Any] = [None] * self.world_size
        dist.all_gather_object(hashes, mine, group=self.session.commands)
        odd = [rank for rank, value in enumerate(hashes) if value != hashes[0]]
        if odd:
            raise ValueError(
                f"the processes were started with different configurations (hash of command line, package versions, "
                f"backend configuration, tokenizer and corpus, by rank: {hashes}); rank(s) {odd} differ from rank 0: "
                "start every process with the same command, corpus and packages"
            )

    def rows(self, count: int) -> slice:
        return share(count, self.rank, self.world_size)

    def wrap(self, model: Any) -> Any:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if self.session.device.startswith("cuda") else None
        # The models' buffers (rotary tables, masks) are constants: no broadcast per forward
        # (the option's name changed in torch 2.13).
        renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        no_buffer_sync = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
        self._ddp = DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True, **no_buffer_sync)
        return self._ddp

    def sync(self, last: bool) -> Any:
        return contextlib.nullcontext() if last else self._ddp.no_sync()

    def sum_(self, tensor: Any) -> None:
        import torch.distributed as dist

        dist.all_reduce(tensor)

    def gather_rows(self, local: Any) -> Any:
        import torch
        import torch.distributed as dist

        parts = [torch.empty_like(local) for _ in range(self.world_size)] if self.rank == 0 else None
        dist.gather(local.contiguous(), parts, dst=0, group=self.session.commands)
        if parts is None:
            return None
        # (world, n, b, L) -> micro-batch by micro-batch, rank 0's rows first
        return torch.stack(parts).transpose(0, 1).reshape(-1, local.shape[-1])


def hf_backend(config: Any = None, **overrides: Any) -> Any:
    """This process's backend in the current session: on rank 0 the `DistributedBackend`
    that drives every process, elsewhere the local replica for `serve`. Arguments as
    `HFBackend`'s."""
    from mixgym.llm_backend.hf import HFBackend

    current = current_session()
    if current is None:
        raise RuntimeError("hf_backend needs a distributed session (mixgym.llm_backend.distributed.session)")
    if current.driver is not None:
        raise RuntimeError("this session already drives a backend: one distributed backend per session")
    replica = HFBackend(config, replicas=DataParallel(current), **overrides)
    if current.rank != 0:
        return replica
    current.driver = DistributedBackend(current, replica)
    return current.driver


# ---------------------------------------------------------------------- collectives
def _send(current: Session, message: tuple[Any, ...]) -> None:
    import torch.distributed as dist

    dist.broadcast_object_list([message], src=0, group=current.commands)


def _receive(current: Session) -> tuple[Any, ...]:
    import torch.distributed as dist

    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=0, group=current.commands)
    return box[0]


def _gather_process_states(current: Session, backend: Any) -> list[dict[str, Any]] | None:
    """Every process's own state (`HFBackend.process_state`), on rank 0."""
    import torch.distributed as dist

    states: list[Any] | None = [None] * current.world_size if current.rank == 0 else None
    dist.gather_object(backend.process_state(), states, dst=0, group=current.commands)
    return states


def _broadcast_state(current: Session, state: Any) -> Any:
    """Rank 0's `state` (nested dicts, lists and tuples of tensors and small values) on every
    process: its layout as one small object over the gloo group, then each tensor by a
    broadcast of its own on the job's device (NCCL on GPUs). Tensors arrive on the CPU."""
    import torch
    import torch.distributed as dist

    tensors: list[Any] = []

    def to_layout(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            tensors.append(value)
            return ("__tensor__", len(tensors) - 1, tuple(value.shape), str(value.dtype).removeprefix("torch."))
        if isinstance(value, dict):
            return {key: to_layout(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(to_layout(item) for item in value)
        return value

    box = [to_layout(state) if current.rank == 0 else None]
    dist.broadcast_object_list(box, src=0, group=current.commands)

    def from_layout(value: Any) -> Any:
        if isinstance(value, tuple) and len(value) == 4 and value[0] == "__tensor__":
            _, index, shape, dtype = value
            if current.rank == 0:
                buffer = tensors[index].detach().to(current.device).contiguous()
            else:
                buffer = torch.empty(shape, dtype=getattr(torch, dtype), device=current.device)
            dist.broadcast(buffer, src=0)
            return buffer.cpu()
        if isinstance(value, dict):
            return {key: from_layout(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(from_layout(item) for item in value)
        return value

    return from_layout(box[0])


def _load(current: Session, backend: Any, state: dict[str, Any] | None) -> None:
    """Every process loads rank 0's checkpoint `state` (None elsewhere), each with its own
    RNG and data positions."""
    import torch.distributed as dist

    shared = None if state is None else {key: value for key, value in state.items() if key not in ("ranks", "world_size")}
    shared = _broadcast_state(current, shared)
    own: list[Any] = [None]
    dist.scatter_object_list(own, None if state is None else state["ranks"], src=0, group=current.commands)
    backend.load_state_dict({**shared, **own[0]})


# ---------------------------------------------------------------------- rank 0
class DistributedBackend:
    """The backend rank 0 drives (`mixgym.llm_backend.base.Backend`): every call that
    changes or reads the run as a whole runs on every process (module docstring).

    Attributes:
        local: rank 0's own replica (an `HFBackend`).
    """

    SIGNALS = frozenset({Signal.GRADIENTS, Signal.WEIGHT_NORMS, Signal.TOKENS})
    """The signals that are combined across processes."""

    def __init__(self, current: Session, local: Any) -> None:
        self.session = current
        self.local = local
        self.domains: list[str] = list(local.domains)
        self.total_steps: int = local.total_steps
        self.signals = frozenset(local.signals) & self.SIGNALS
        self._open = True
        self._busy = False

    @property
    def step(self) -> int:
        return self.local.step

    @property
    def info(self) -> BackendInfo:
        return self.local.info

    @property
    def config(self) -> Any:
        return self.local.config

    @property
    def micro_batch_domains(self) -> np.ndarray:
        return self.local.micro_batch_domains

    @contextlib.contextmanager
    def _everyone(self, command: str, *arguments: Any) -> Iterator[None]:
        """Send `command` to the other processes; run the body (rank 0's part of it)."""
        if not self._open:
            raise RankLost(f"cannot run {command}: the other processes have stopped")
        try:
            _send(self.session, (command, *arguments))
            self._busy = True
            yield
            self._busy = False
        except RuntimeError as error:
            if not _communication_failure(error):
                raise
            self._open = False
            raise RankLost(
                f"a process of the {self.session.world_size}-process job was lost or stopped answering during "
                f"{command} (collective timeout {self.session.timeout_s:g} s): {error}. Rank 0 stops; the last "
                "checkpoint written is complete: rerun the same command with --resume"
            ) from error

    def reset(self, seed: int) -> None:
        with self._everyone("reset", seed):
            self.local.reset(seed)

    def train(self, mixture: np.ndarray, n_steps: int) -> TrainStats:
        plan = self.local.draw_plan(mixture, n_steps)
        with self._everyone("train", plan):
            return self.local.train_plan(plan)

    def evaluate(self) -> dict[str, float]:
        with self._everyone("evaluate"):
            return self.local.evaluate()

    def domain_gradients(self) -> np.ndarray:
        return self.local.domain_gradients()

    def weight_stats(self) -> WeightStats:
        return self.local.weight_stats()

    def state_dict(self) -> dict[str, Any]:
        """Rank 0's state plus every process's own part (``ranks``) and the world size."""
        with self._everyone("state_dict"):
            ranks = _gather_process_states(self.session, self.local)
        return {**self.local.state_dict(), "ranks": ranks, "world_size": self.session.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("world_size")
        if saved != self.session.world_size:
            raise ValueError(
                f"this state is from a run on {saved} process(es) (None: not a distributed run); this run has "
                f"{self.session.world_size}: resume with the same number of processes"
            )
        with self._everyone("load_state_dict"):
            _load(self.session, self.local, state)

    def close(self) -> None:
        """Tell the other processes to stop serving (`session` does it on leaving). After an
        error in the middle of a command the others are inside its collectives and cannot
        hear it: rank 0 then just leaves, and their collectives fail (`RankLost` there)."""
        if self._open and not self._busy:
            with self._everyone("stop"):
                pass
        self._open = False


# ---------------------------------------------------------------------- ranks > 0
def serve(backend: Any) -> int:
    """Run rank 0's commands on this process's replica (`hf_backend` on a rank > 0) until
    it says stop; returns the number of commands served. Raises `RankLost` when rank 0 is
    lost or sends nothing for the collectives' timeout."""
    replicas = getattr(backend, "replicas", None)
    if not isinstance(replicas, DataParallel):
        raise ValueError(
            f"serve needs the replica that hf_backend returns on a rank > 0, got a {type(backend).__name__}; "
            "only the hf backend runs on several processes"
        )
    current = replicas.session
    served = 0
    while True:
        try:
            command, *arguments = _receive(current)
            if command == "stop":
                return served
            if command == "reset":
                backend.reset(*arguments)
            elif command == "train":
                backend.train_plan(*arguments)
            elif command == "evaluate":
                backend.evaluate()
            elif command == "state_dict":
                _gather_process_states(current, backend)
            elif command == "load_state_dict":
                _load(current, backend, None)
            else:
                raise ValueError(f"unknown command {command!r} from rank 0")
        except RuntimeError as error:
            if not _communication_failure(error):
                raise
            raise RankLost(
                f"rank {current.rank}: rank 0 or another process was lost, or rank 0 sent no command for "
                f"{current.timeout_s:g} s (the collective timeout): {error}"
            ) from error
        served += 1


# ---------------------------------------------------------------------- local jobs
def launch(function: Callable[..., Any], world_size: int = 2, timeout_s: float = 600.0, **options: Any) -> list[dict[str, Any]]:
    """Run ``function(rank, world_size, init_method, **options)`` on `world_size` fresh local
    processes (the "spawn" start method; `init_method` a ``file://`` rendezvous to pass to
    `session`), as torchrun would on one machine, for tests, benchmarks and notebooks.

    Each process writes what `function` returned (it must pickle) or the error it raised and
    ends with ``os._exit(0)`` (gloo can hang while tearing down at interpreter exit). Returns
    each rank's outcome: ``{"result": ...}``, ``{"error": "Type: message", "traceback": ...}``,
    or ``{"exitcode": n}`` for a process that died without writing. Processes still running
    after `timeout_s` seconds are killed and `TimeoutError` names them: no hang.
    """
    folder = Path(tempfile.mkdtemp(prefix="mixgym-launch-"))
    try:
        init_method = f"file://{folder / 'rendezvous'}"
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(target=_launched_process, args=(function, rank, world_size, init_method, str(folder), options))
            for rank in range(world_size)
        ]
        for process in processes:
            process.start()
        deadline = time.monotonic() + timeout_s
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
        if hung:
            raise TimeoutError(f"rank(s) {hung} of {function.__name__} still running after {timeout_s:g} s; killed")
        outcomes = []
        for rank, process in enumerate(processes):
            path = folder / f"rank{rank}.pkl"
            outcomes.append(pickle.loads(path.read_bytes()) if path.exists() else {"exitcode": process.exitcode})
        return outcomes
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _launched_process(function: Callable[..., Any], rank: int, world_size: int, init_method: str, folder: str, options: dict[str, Any]) -> None:
    try:
        outcome: dict[str, Any] = {"result": function(rank, world_size, init_method, **options)}
    except BaseException as error:  # reported to the launcher
        outcome = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    path = Path(folder, f"rank{rank}.pkl")
    path.with_suffix(".tmp").write_bytes(pickle.dumps(outcome))
    path.with_suffix(".tmp").replace(path)
    os._exit(0)
