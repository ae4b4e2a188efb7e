"""JSONL row files: one JSON object (with an ``id``) per line, appended and flushed, read back
for a resume, rewritten atomically.

Every resumable output of isograd is such a file: the stage files of ``isograd qa``, the output
of ``isograd score``, and the per-rank part files of a torchrun job (`isograd.rows.ranks`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def json_safe(x: Any) -> Any:
    """JSON-safe: non-finite floats -> None, tuples -> lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def digest(value: Any) -> str:
    """16 hex digits identifying a JSON value (a stage's config, a row's input and the options
    that change it); keys sorted, so equal values give equal digests."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- files


def _split_tail(data: bytes) -> tuple[int, bytes]:
    """(bytes of the complete lines, the last line when it lacks its newline)."""
    end = data.rfind(b"\n") + 1
    return end, data[end:]


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL row file (scores.jsonl, ``isograd score --out``), in file order; the
    file is only read (`open_rows` repairs its end before an append).

    A last line without its newline is kept when it is a complete row (e.g. a file written by
    hand or by another tool). A last line that is not valid JSON, a write cut short by a kill,
    is left out with a warning saying so: its row is redone and the cut-off bytes are removed
    before the next append. Any other malformed line is an error naming it.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end, tail = _split_tail(data)
    lines = data[:end].split(b"\n")[:-1]
    if tail.strip():
        if _is_json(tail):
            lines.append(tail)
        else:
            warnings.warn(f"{path}: the last line ({len(tail)} bytes) is not valid JSON, a write "
                          "cut short by a kill: left out, its row is redone, and it is removed "
                          "before the next append", RuntimeWarning, stacklevel=2)
    rows: list[dict[str, Any]] = []
    for i, raw in enumerate(lines, 1):
        try:
            row = json.loads(raw)
        except ValueError as e:
            raise ValueError(f"{path}:{i}: malformed row ({e}); fix or remove the line") from None
        if not isinstance(row, dict) or "id" not in row:
            raise ValueError(f"{path}:{i}: a row must be a JSON object with an 'id'")
        rows.append(row)
    return rows


@contextmanager
def open_rows(path: str | Path) -> Iterator[IO[str]]:
    """`path` opened for appending rows (`append_row`), its end repaired first: a complete
    last row gets its newline, a cut-off last line (not valid JSON) is removed."""
    path = Path(path)
    if path.exists():
        data = path.read_bytes()
        end, tail = _split_tail(data)
        if tail.strip() and _is_json(tail):
            with path.open("ab") as f:
                f.write(b"\n")
        elif tail:
            with path.open("r+b") as f:
                f.truncate(end)
    with path.open("a", encoding="utf-8") as f:
        yield f


def append_row(f: IO[str], row: dict[str, Any]) -> None:
    """Append `row` as one line and flush it to disk (a kill loses at most this row)."""
    f.write(json.dumps(json_safe(row), ensure_ascii=False, allow_nan=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def rewrite_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Replace `path` by `rows` atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(json_safe(r), ensure_ascii=False, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
