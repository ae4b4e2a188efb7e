"""Rows of a QA run: JSONL rows (append, resume, atomic rewrite), the run options (`QAConfig`).

Shared by `isograd qa` (`isograd.qa.pipeline`, one file per stage) and `isograd score`
(`isograd.qa.score_pairs`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

ALL_METHODS = ("p_true", "naive_entropy", "semantic_entropy", "msp", "mean_token_entropy")


class RunMismatchError(ValueError):
    """DIR already holds a run made with other options."""


@dataclass(frozen=True)
class QAConfig:
    """The options that determine a run's rows (saved as DIR/config.json)."""

    model: str = "smollm2-135m"
    dataset: str = "truthfulqa-gen"
    data: str | None = None
    methods: tuple[str, ...] = ALL_METHODS
    prediction: str = "geometric"
    prompt: str = "short"
    alternatives: bool = True
    seed: int = 0
    max_new_tokens: int = 24
    k: int = 5
    temperature: float = 1.0
    dtype: str = "fp32"
    device: str = "cpu"
    norm_method: str = "auto"
    judge: str = "auto"
    trace: bool = False
    layer_scale: str = "weight-variance"
    last_layers: int = 5
    baseline_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    subset: int | None = None
    trace_subset: int | None = None

    def subset_of(self, stage: str) -> int | None:
        """How many of the first questions stage `stage` covers (None: all): ``trace_subset``
        (else ``subset``) for the trace, ``subset`` for samples and baselines."""
        if stage == "trace" and self.trace_subset is not None:
            return self.trace_subset
        if stage in ("trace", "samples") or stage.startswith("baseline-"):
            return self.subset
        return None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["methods"] = list(self.methods)
        return d


def parse_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["semantic_entropy.entailment=embedding", ...]`` -> ``{method: {key: value}}``.

    Values are read as JSON when they parse (numbers, true/false, null), else kept as text.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not (sep and dot and method and name):
            raise ValueError(f"baseline option {item!r} must look like METHOD.KEY=VALUE")
        try:
            v: Any = json.loads(value)
        except ValueError:
            v = value
        out.setdefault(method.strip(), {})[name.strip()] = v
    return out


def question_seed(seed: int, qid: str) -> int:
    """Per-question seed: independent of order, limit and interruptions."""
    h = int(hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()[:12], 16)
    return h % (2**31 - 1)


def _clean(x: Any) -> Any:
    """JSON-safe: non-finite floats -> None, tuples -> lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


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


def append_row(f, row: dict[str, Any]) -> None:
    f.write(json.dumps(_clean(row), ensure_ascii=False, allow_nan=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def rewrite_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(_clean(r), ensure_ascii=False, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
