"""Data-parallel training with torchrun: who this process is, which rows it reads, and what it agrees
with the others.

One process (no torchrun) is the world of one: nothing is initialised, no collective runs, and
training behaves exactly as it did before ranks existed. Under torchrun every rank reads its own
contiguous row groups of the Parquet splits (never the whole table), takes an equal share of each
global batch, and DistributedDataParallel averages the gradients, so N ranks follow the recipe of
one process with the same global batch. Only rank 0 writes: checkpoints, metrics, MLflow.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import torch
import torch.distributed as dist

from .data import DataError
from .device import Placement


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def lead(self) -> bool:
        """Rank 0: the one process that writes checkpoints, metrics and the MLflow record."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "World":
        """The rank torchrun gave this process (RANK, WORLD_SIZE, LOCAL_RANK), or the world of one."""
        env = os.environ if env is None else env
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    # -- collectives: identities in the world of one ---------------------------------------------------
    def sum(self, *values: float) -> list[float]:
        if not self.parallel:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=_wire())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def max(self, value: int) -> int:
        if not self.parallel:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=_wire())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks, returned where `t` lives."""
        if not self.parallel:
            return t
        out = t.detach().to(_wire(), torch.float64).clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(t.device, t.dtype)

    def union(self, items: list[int]) -> list[int]:
        """The sorted union of every rank's integers."""
        if not self.parallel:
            return sorted(set(items))
        gathered: list[list[int]] = [[] for _ in range(self.size)]
        dist.all_gather_object(gathered, list(items))
        return sorted({i for part in gathered for i in part})

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier()


SINGLE = World()


def _wire() -> torch.device:
    """Where collective tensors must live: NCCL reduces GPU tensors only, gloo CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def backend_for(device: str, asked: str = "auto") -> str:
    """NCCL between GPUs, gloo on the CPU (NCCL cannot reduce CPU tensors)."""
    if asked != "auto":
        return asked
    return "nccl" if device.startswith("cuda") else "gloo"


def join(world: World, device: str, backend: str = "auto", env: dict[str, str] | None = None) -> None:
    """Join torchrun's process group; a world of one joins nothing.

    The keys of every attempt live under their own prefix of torchrun's store: the agent keeps one
    store across elastic restarts, and a restarted world that read the keys its dead predecessor left
    waited forever in the process group's handshake (seen with torch 2.13, gloo, after a SIGKILL)."""
    if world.parallel and not dist.is_initialized():
        env = os.environ if env is None else env
        if device.startswith("cuda"):
            torch.cuda.set_device(world.local_rank)
        agent_store = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun hosts it; else rank 0 does
        store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), world.size,
                              is_master=world.lead and not agent_store)
        attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend_for(device, backend), store=dist.PrefixStore(f"yanjin/attempt_{attempt}", store),
                                rank=world.rank, world_size=world.size)


def leave(world: World) -> None:
    if world.parallel and dist.is_initialized():
        dist.destroy_process_group()


def rank_placement(place: Placement, world: World) -> Placement:
    """On GPUs every rank of a node takes its own (cuda:LOCAL_RANK); on the CPU all share it."""
    return replace(place, device=f"cuda:{world.local_rank}") if place.device.startswith("cuda") and world.parallel \
        else place


# -- shards ---------------------------------------------------------------------------------------------
def row_group_shard(sizes: list[int], world: World) -> list[int]:
    """The row groups rank `world.rank` reads: contiguous, and balanced by rows (each group goes to the
    rank whose equal share of the rows its first row falls in)."""
    total, start, mine = sum(sizes), 0, []
    for group, n in enumerate(sizes):
        if start * world.size // max(1, total) == world.rank:
            mine.append(group)
        start += n
    return mine


def read_shard(path: str | Path, world: World = SINGLE, columns: list[str] | None = None) -> pd.DataFrame:
    """This rank's rows of a Parquet split, read by row group; the whole table in the world of one."""
    if not world.parallel:
        return pd.read_parquet(path, columns=columns)
    f = pq.ParquetFile(path)
    sizes = [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)]
    groups = row_group_shard(sizes, world)
    if not groups:
        raise DataError(f"{path}: {len(sizes)} row group(s) of {sum(sizes)} rows cannot feed {world.size} ranks; "
                        f"lower distributed.row_group_rows (now at most {max(sizes)} rows a group) or use fewer ranks")
    return f.read_row_groups(groups, columns=columns).to_pandas()


def write_split(frame: pd.DataFrame, path: str | Path, row_group_rows: int) -> None:
    """A split as Parquet in row groups of `row_group_rows`: the unit one rank reads."""
    frame.to_parquet(path, index=False, row_group_size=row_group_rows)
