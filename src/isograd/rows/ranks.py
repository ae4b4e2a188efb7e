"""Data-parallel runs under torchrun: rank shares, per-rank part files, one merge.

A command started by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) joins the process
group (gloo on CPUs, NCCL on GPUs). Every rank reads what is already done (the output file and
every part file, whatever world size wrote them), waits for all others to have read, and takes
its interleaved share of the rest: ``todo[rank::world]``. It appends its rows to its own
``<out>.part<rank>``, resumable like the output itself. After a barrier rank 0 merges the output
and all part files into the output, in input order, and removes the parts. So a run resumes under
any world size with nothing lost or duplicated, and the merged file is the one a single process
writes. The row loop that runs through them is `isograd.rows.runner.run_rows`; FSDP2 model
loading is `isograd.lm.fsdp`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from .files import read_rows, rewrite_rows

T = TypeVar("T")

TIMEOUT = timedelta(hours=1)
"""How long a rank waits at a barrier for the others (shares differ by at most one batch)."""


@dataclass(frozen=True)
class Rank:
    """This process's place in the job (rank 0 of 1 outside torchrun).

    Attributes:
        rank: global rank.
        world: number of processes.
        local_rank: rank on this node (selects ``cuda:<local_rank>``).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that merges, reports and prints."""
        return self.rank == 0


def launched() -> bool:
    """Whether this process was started by torchrun (which sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: str = "cpu") -> Rank:
    """Join the torchrun job (idempotent); outside torchrun rank 0 of 1, nothing initialised.

    Args:
        device: the run's device option; "cuda..." selects NCCL (with gloo for CPU tensors).
    """
    if not launched():
        return Rank()
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=TIMEOUT)
    return Rank(dist.get_rank(), dist.get_world_size(), local)


def current() -> Rank:
    """This process's place in an already joined job (`setup`), else rank 0 of 1."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Rank()
    return Rank(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def device_for(device: str, rank: Rank) -> str:
    """A bare "cuda" means this rank's own GPU, ``cuda:<local_rank>``; others are kept."""
    return f"cuda:{rank.local_rank}" if device == "cuda" and rank.world > 1 else device


def barrier(rank: Rank) -> None:
    """Wait for every rank (no-op in a single process).

    Polled from Python, so that torchrun's SIGTERM (another rank died) reaches the handler of
    `on_peer_failure` at once instead of after the blocking collective gives up.
    """
    if rank.world > 1:
        import torch.distributed as dist

        work = dist.barrier(async_op=True)
        while not work.is_completed():
            time.sleep(0.02)
        work.wait()


def share(items: Sequence[T], rank: Rank) -> list[T]:
    """This rank's interleaved share ``items[rank::world]`` (sizes differ by at most one)."""
    return list(items[rank.rank::rank.world])


def steps(n_todo: int, rank: Rank, batch_size: int) -> int:
    """Batches of the largest share: under FSDP2 every rank must run that many."""
    largest = -(-n_todo // rank.world)
    return -(-largest // batch_size)


def part_path(out: Path, rank: Rank) -> Path:
    """Where `rank` appends its rows of `out` (the output itself in a single process)."""
    return out if rank.world == 1 else out.with_name(f"{out.name}.part{rank.rank}")


def part_files(out: Path) -> list[Path]:
    """Part files of `out` left by any world size, in rank order."""
    found = [p for p in out.parent.glob(f"{out.name}.part*") if p.name[len(out.name) + 5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(out.name) + 5:]))


def read_all(out: Path) -> list[dict[str, Any]]:
    """Rows of `out` and of all its part files (a cut-off last line is dropped, see read_rows)."""
    return [r for p in [out, *part_files(out)] for r in read_rows(p)]


def drop_rows(out: Path, ids: set[str]) -> None:
    """Remove the rows of `ids` from `out` and its part files (each rewritten atomically)."""
    for p in [out, *part_files(out)]:
        rows = read_rows(p)
        kept = [r for r in rows if r["id"] not in ids]
        if len(kept) < len(rows):
            rewrite_rows(p, kept)


def merge(out: Path, order: Sequence[str]) -> int:
    """Fold the part files into `out`: rows in `order` (input ids), then any others; parts removed.

    Crash-safe: `out` is rewritten atomically before the parts are removed, so a merge killed
    in between leaves each of those rows twice, identical; a rerun keeps one copy of an
    identical duplicate.

    Returns:
        The number of rows written.

    Raises:
        ValueError: an id appears twice with different rows (its files are named).
    """
    parts = part_files(out)
    if not parts:
        return len(read_rows(out))
    rows: dict[str, dict[str, Any]] = {}
    where: dict[str, Path] = {}
    for p in [out, *parts]:
        for r in read_rows(p):
            if r["id"] in rows:
                if r == rows[r["id"]]:
                    continue  # a merge killed before it removed the parts
                raise ValueError(f"id {r['id']!r} is in both {where[r['id']]} and {p}, with "
                                 "different rows; remove one of the two")
            rows[r["id"]], where[r["id"]] = r, p
    pos = {rid: i for i, rid in enumerate(order)}
    ranked = sorted(rows.values(), key=lambda r: pos.get(r["id"], len(pos)))  # stable
    out.parent.mkdir(parents=True, exist_ok=True)
    rewrite_rows(out, ranked)
    for p in parts:
        p.unlink()
    return len(ranked)


def finish(out: Path, order: Sequence[str], rank: Rank) -> None:
    """After every rank's rows are written: rank 0 merges, the others wait for it."""
    barrier(rank)
    if rank.main:
        merge(out, order)
    barrier(rank)


def on_peer_failure(rank: Rank, out: Path) -> None:
    """Turn torchrun's SIGTERM (another rank failed) into a clear exit of this rank."""
    if rank.world == 1:
        return

    def stop(signum: int, frame: Any) -> None:
        print(f"isograd: rank {rank.rank} of {rank.world} stopped: another rank failed (see "
              f"torchrun's report). Rows done so far are kept in {out} and {out.name}.part*; "
              "rerun the same command (any number of processes) to finish the missing rows.",
              file=sys.stderr, flush=True)
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, stop)
