"""Checkpoints: everything needed to resume exactly, written atomically, loaded with weights_only=True."""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnmode.engine.distributed import World
from cnnmode.engine.loop import EpochTally
from cnnmode.engine.state import RunState
from cnnmode.errors import UsageError
from cnnmode.files import atomic_torch_save, atomic_write, torch_load


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as weights_only-safe values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.copy()), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    random.setstate(_as_tuple(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: Path, **parts: Any) -> Path:
    """Write a checkpoint dict atomically (temp file + rename)."""
    return atomic_torch_save(parts | {"rng": rng_state()}, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint; a missing file is a usage error naming the folder."""
    if not Path(path).is_file():
        raise UsageError(f"no checkpoint at {path}; --resume needs a run folder with last.pt")
    return torch_load(path)


def keep_epoch_checkpoint(last: Path, folder: Path, epoch: int, every: int, keep: int) -> list[Path]:
    """Copy the just-written `last` to folder/epoch-NNNN.pt on every `every`-th epoch, then remove all but the
    newest `keep` of them (0 = keep all); returns the files removed."""
    if every <= 0 or epoch % every:
        return []
    folder.mkdir(exist_ok=True)
    target = folder / f"epoch-{epoch:04d}.pt"
    atomic_write(target, lambda tmp: shutil.copyfile(last, tmp))
    saved = sorted(folder.glob("epoch-*.pt"))
    old = saved[:-keep] if keep else []
    for path in old:
        path.unlink(missing_ok=True)
    return old


def restore_rank(ckpt: dict[str, Any], world: World, seed: int) -> tuple[RunState, str | None]:
    """This rank's RunState from a checkpoint, its RNG set back: each rank gets its own RNG and, for a mid-epoch
    checkpoint, its loader position. A different world size keeps the global batch and the position, with fresh
    random streams for ranks the checkpoint did not have (the second value then says so)."""
    state = RunState(**ckpt["state"])
    ranks = ckpt.get("ranks") or [{"rng": ckpt["rng"], "partial": state.partial}]
    if len(ranks) == world.size:
        set_rng_state(ranks[world.rank]["rng"])
        state.partial = ranks[world.rank]["partial"]
        return state, None
    set_rng_state(ckpt["rng"])
    torch.manual_seed(seed + 7_919 * world.rank + state.epoch)
    if state.partial is not None:  # mid-epoch: the global position holds; other ranks' sums start afresh
        tally = ranks[0]["partial"]["tally"] if world.is_main else vars(EpochTally())
        state.partial = {"loader": {"epoch": state.epoch + 1, "position": state.step, "gen": None}, "tally": tally}
    return state, f"resuming a {len(ranks)}-process run with {world.size}: same global batch, new random streams"
