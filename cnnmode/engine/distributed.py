"""Data-parallel training under `torchrun`: the process's place in the job, and the few collectives the engine
needs. Every function is a no-op (or the identity) in a plain single process, so the engine has one code path.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT, TORCHELASTIC_RUN_ID and
TORCHELASTIC_RESTART_COUNT; we launch nothing ourselves.
"""
from __future__ import annotations

import io
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

from cnnmode.machine import usable_cores
from cnnmode.errors import UsageError


@dataclass(frozen=True)
class World:
    """This process's rank among `size` processes (`local_*`: on this machine)."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    active: bool = False  # True in a torchrun job (even of one process: DDP and NCCL run as with several)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints."""
        return self.rank == 0


def launched() -> bool:
    """True when torchrun (or another launcher setting its variables) started this process."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def kill_if_asked(step: int, world_: "World") -> None:
    """Fault tests: SIGKILL this process after global optimizer step CNNMODE_TEST_KILL_AT_STEP (on rank
    CNNMODE_TEST_KILL_RANK, default 0; only on torchrun's first attempt, so an elastic restart goes on)."""
    at = os.environ.get("CNNMODE_TEST_KILL_AT_STEP")
    if at and step == int(at) and restart_count() == 0 and \
            world_.rank == int(os.environ.get("CNNMODE_TEST_KILL_RANK", "0")):
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))  # Windows has no SIGKILL


def world() -> World:
    """This process's place: from the initialised process group, else a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                 int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())), active=True)


def start() -> World:
    """Join the torchrun job (gloo for CPU tensors, NCCL for CUDA ones where there is a GPU); a plain process
    stays a single process. Idempotent."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return world()
    if not dist.is_available():
        raise UsageError("torchrun started this process, but this PyTorch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "gloo"
    if torch.cuda.is_available() and local_rank < torch.cuda.device_count():
        torch.cuda.set_device(local_rank)  # NCCL's object collectives use the current device
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend, store=_attempt_store(), rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))
    _watch_agent()
    return world()


_agent_gone = threading.Event()


def _watch_agent(every_s: float = 1.0) -> None:
    """A daemon thread that notices when the torchrun agent that started this rank dies (kill -9 leaves its ranks
    running, re-parented): the ranks then stop together at their next step (see `agent_gone`)."""
    agent = os.getppid()

    def watch() -> None:
        while not _agent_gone.wait(every_s):
            if os.getppid() != agent:
                _agent_gone.set()

    threading.Thread(target=watch, name="cnnmode-agent-watch", daemon=True).start()


def agent_gone() -> bool:
    """True on every rank at the same step once any rank has seen its torchrun agent die (a collective under
    torchrun: all ranks call it at each step; always False in a single process)."""
    if not world().active:
        return False
    return all_sum([float(_agent_gone.is_set())])[0] > 0


def lost_a_peer(error: BaseException) -> bool:
    """Whether an error is this rank's side of another rank's failure (gloo/NCCL lost the connection to it):
    the other rank's own error says what went wrong."""
    text = str(error).lower()
    return launched() and (isinstance(error, getattr(dist, "DistError", ())) or any(
        w in text for w in ("connection reset by peer", "connection closed by peer", "broken pipe")))


def _attempt_store() -> dist.Store:
    """The launch's key-value store, under a prefix of its own for each elastic attempt: torchrun's agent keeps
    one store across restarts, and a restarted rank must not read the address a dead rank published there."""
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          int(os.environ["WORLD_SIZE"]), is_master=not agent_hosts and os.environ["RANK"] == "0")
    return dist.PrefixStore(f"cnnmode/attempt-{restart_count()}", store)


def stop() -> None:
    """Leave the job's process group (end of a run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def restart_count() -> int:
    """How many times torchrun's elastic agent has restarted the workers (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def run_id() -> str:
    """The launch's id (torchrun --rdzv-id, or a fresh id under --standalone); '' when none was given."""
    value = os.environ.get("TORCHELASTIC_RUN_ID", "")
    return "" if value in ("", "none") else value


def shared_run_name(name: str, w: World) -> str:
    """The run's name as every rank and every elastic restart agree on it: `name` when given, else under torchrun
    the launch's --rdzv-id ('' outside torchrun: the caller picks one)."""
    if name or not w.active:
        return name
    if not run_id():
        raise UsageError("under torchrun give the run a name: run.name=NAME (or torchrun --rdzv-id NAME), so that "
                         "every rank and every elastic restart uses the same run folder")
    return run_id()


def cpu_threads(w: World) -> int:
    """The cores this machine's ranks share fairly: cores / local ranks (at least 1)."""
    return max(1, usable_cores() // max(1, w.local_size))


def rank_device(w: World, requested: str) -> torch.device | None:
    """The device a rank trains on: cuda:LOCAL_RANK where there is a GPU (unless run.device=cpu), else the CPU;
    None in a single process (the usual device choice applies)."""
    if not w.active:
        return None
    if requested not in ("auto", "cpu", "cuda"):
        raise UsageError(f"run.device={requested} cannot be split among {w.size} ranks; under torchrun use "
                         "run.device=auto, cuda (each rank takes cuda:LOCAL_RANK) or cpu")
    if requested != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", w.local_rank)
    if requested == "cuda":
        raise UsageError("run.device=cuda but no CUDA GPU is available; use run.device=auto or cpu")
    return torch.device("cpu")


@contextmanager
def main_first(w: World) -> Iterator[None]:
    """Rank 0 does the block first (e.g. writes a data cache), the others after it (and read the cache)."""
    if w.active and not w.is_main:
        dist.barrier()
    yield
    if w.active and w.is_main:
        dist.barrier()


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums across ranks (the values themselves in a single process)."""
    if not world().active:
        return values
    t = torch.tensor(values, dtype=torch.float64)  # CPU tensors go through gloo, also beside NCCL
    dist.all_reduce(t)
    return t.tolist()


def gather_rows(part: torch.Tensor, total: int) -> torch.Tensor:
    """Undo a strided split: rank r holds rows r, r + size, ... of `total` rows; every rank gets all of them,
    in their original order."""
    w = world()
    if not w.active:
        return part
    per_rank = -(-total // w.size)
    padded = torch.zeros((per_rank, *part.shape[1:]), dtype=part.dtype)  # on the CPU: gloo, also beside NCCL
    padded[:len(part)] = part.cpu()
    pieces = [torch.empty_like(padded) for _ in range(w.size)]
    dist.all_gather(pieces, padded)
    return torch.stack(pieces, 1).flatten(0, 1)[:total].to(part.device)


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (the object itself in a single process)."""
    w = world()
    if not w.active:
        return obj
    box = [_pack(obj) if w.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return _unpack(box[0])


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order ([obj] in a single process)."""
    w = world()
    if not w.active:
        return [obj]
    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, _pack(obj))
    return [_unpack(b) for b in out]


def _pack(obj: Any) -> bytes:
    """torch.save bytes: tensors inside plain containers travel as bytes (c10d's own pickling of tensors fails
    to load them back on some builds), and come back through weights_only loading."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _unpack(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)
