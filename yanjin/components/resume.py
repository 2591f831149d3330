"""Resume checkpoints: everything a training loop needs to continue where it stopped.

Model, optimizer, schedule and gradient scaler, every rank's random state, the epoch order's
generator as it was when the epoch began, the position in the epoch, and the history so far. Rank 0
writes them every N optimizer steps and at every epoch end, atomically (a rank lost mid-write leaves
the previous checkpoint whole). A restarted world (torchrun's elastic restart, a rescheduled pod)
loads rank 0's newest and continues at the next step. These are working files of one training, not a
release: torch's format read back with `weights_only=True`, unlike the safetensors versions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .distributed import World


@dataclass(frozen=True)
class Resume:
    directory: Path
    every: int = 0               # optimizer steps between checkpoints; 0 = at epoch ends only

    def path(self, key: str) -> Path:
        return Path(self.directory) / f"{key}.pt"

    def load(self, key: str, world: World) -> dict | None:
        """Rank 0's checkpoint, sent to every rank: only rank 0's disk needs it (other nodes' pods may be
        new), and all ranks continue from the same step or all start afresh."""
        path = self.path(key)
        state = torch.load(path, map_location="cpu", weights_only=True) if world.lead and path.is_file() else None
        if not world.parallel:
            return state
        box = [state]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, key: str, state: dict, world: World) -> None:
        """Every rank hands in its random state; rank 0 writes the file; all wait until it is whole."""
        state = state | {"rng": gather_rng(world)}
        if world.lead:
            path = self.path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)  # atomic: a reader sees the old checkpoint or the new one, never half
        world.barrier()


def rng_state() -> dict:
    """torch's generators: the only ones the training loops draw from (dropout; the epoch order has its own)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on a GPU draws from its generator
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def gather_rng(world: World) -> list[dict]:
    """Each rank's random state (dropout draws differ between ranks: their batches differ in shape)."""
    mine = rng_state()
    if not world.parallel:
        return [mine]
    everyone: list[dict] = [{} for _ in range(world.size)]
    dist.all_gather_object(everyone, mine)
    return everyone


def restore_rng(states: list[dict], world: World) -> None:
    if len(states) != world.size:
        raise RuntimeError(f"the resume checkpoint was written by {len(states)} rank(s), this world has "
                           f"{world.size}; resume with the same number of ranks or start afresh")
    s = states[world.rank]
    torch.set_rng_state(s["torch"])
    if "cuda" in s:
        torch.cuda.set_rng_state(s["cuda"])
