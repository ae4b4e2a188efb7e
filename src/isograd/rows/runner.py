"""The one resumable row loop: items in, one appended row per item out, on one process or
across the ranks of a torchrun job (`isograd.rows.ranks`).

Every resumable output runs through `run_rows`: the stages of ``isograd qa`` and the pairs of
``isograd score``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .files import append_row, open_rows
from .ranks import barrier, current, drop_rows, finish, part_path, read_all, share, steps

T = TypeVar("T")

FINGERPRINT = "input_fp"
"""The row field holding the fingerprint of the row's input (`isograd.rows.files.digest`)."""


def run_rows(path: Path, items: Sequence[T], compute: Callable[[list[T]], list[dict[str, Any]]],
             *, key: Callable[[T], str], batch_size: int = 1, lockstep: bool = False,
             desc: str = "", progress: bool = False,
             fingerprint: Callable[[T], str] | None = None,
             legacy: Callable[[T, dict[str, Any]], bool] | None = None,
             check: Callable[[list[T]], None] | None = None) -> int:
    """The row loop of every resumable output, rank-aware: compute the rows of the items whose
    id is in neither `path` nor its part files, `batch_size` at a time, appending each row
    (flushed) to this rank's part file; then rank 0 merges (`finish`).

    Args:
        path: the output JSONL file.
        items: every item the output should cover, in order (the merged file's order).
        compute: items -> one row per item (with its ``id``), in the same order.
        key: an item's id.
        batch_size: items per `compute` call.
        lockstep: every rank calls `compute` as often as the largest share needs (FSDP2's
            collectives); a rank whose share ran out recomputes one item and drops its row.
        desc: progress-bar label. progress: show a tqdm bar (rank 0).
        fingerprint: an item -> the fingerprint of its input (`isograd.rows.files.digest`), recorded in
            each row as ``input_fp``; a row already written whose fingerprint differs was made
            from another input: it is removed (with a warning naming it) and recomputed.
        legacy: whether a row written before fingerprints existed (no ``input_fp``) still
            matches its item (e.g. by the prompt it stores); default: trusted.
        check: called with every item still to compute (all ranks' together) before any row
            is written or removed: raises on an item that cannot be computed (e.g. longer than
            the model's context), so a run refuses before it starts instead of midway.

    Returns:
        The number of rows computed by this call, all ranks together (0: nothing was missing).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank = current()
    done = {r["id"]: r for r in read_all(path)}
    stale = [key(it) for it in items if key(it) in done
             and not _fresh(it, done[key(it)], fingerprint, legacy)]
    todo = [it for it in items if key(it) not in done or key(it) in stale]
    if check is not None and todo:
        check(todo)
    barrier(rank)  # every rank has read the files before any rank appends to them
    if stale:
        if rank.main:
            warnings.warn(f"{path}: {len(stale)} row(s) were made from another input (e.g. id "
                          f"{stale[0]!r}): recomputed", RuntimeWarning, stacklevel=2)
            drop_rows(path, set(stale))
        barrier(rank)
    mine = share(todo, rank)
    n_steps = steps(len(todo), rank, batch_size) if lockstep else -(-len(mine) // batch_size)
    bar = None
    if progress and rank.main and n_steps:
        from tqdm.auto import tqdm

        bar = (tqdm(total=len(items), initial=len(items) - len(todo), desc=desc, unit="row")
               if rank.world == 1 else
               tqdm(total=len(mine), desc=f"{desc} (rank 0 of {rank.world})", unit="row"))
    part = part_path(path, rank)
    try:
        if n_steps:
            part.parent.mkdir(parents=True, exist_ok=True)
            with open_rows(part) as f:  # a row cut off by a kill is removed first
                for step in range(n_steps):
                    chunk = mine[step * batch_size:(step + 1) * batch_size]
                    rows = compute(chunk or list(todo[:1]))
                    if not chunk:
                        continue  # kept the collectives in step; the row is another rank's
                    if [r["id"] for r in rows] != [key(it) for it in chunk]:
                        raise RuntimeError(f"{desc or path.name}: rows do not match their items")
                    for r, it in zip(rows, chunk):
                        if fingerprint is not None:
                            r[FINGERPRINT] = fingerprint(it)
                        append_row(f, r)
                    if bar is not None:
                        bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    finish(path, [key(it) for it in items], rank)
    return len(todo)


def _fresh(item: Any, row: dict[str, Any], fingerprint: Callable[[Any], str] | None,
           legacy: Callable[[Any, dict[str, Any]], bool] | None) -> bool:
    """Whether `row` was made from `item`'s current input."""
    if fingerprint is None:
        return True
    if FINGERPRINT not in row:
        return legacy is None or legacy(item, row)
    return row[FINGERPRINT] == fingerprint(item)
