"""Line-numbered readers of data files, and :class:`DatasetError` that names file and line.

Only the standard library: used by the dataset loaders (`isograd.qa.datasets`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DatasetError(ValueError):
    """A data file is malformed; ``path`` and ``line`` (1-based, or None) locate the problem."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")



def read_text(path: Path) -> str:
    """The file as UTF-8 text (a leading BOM dropped); bytes that are not UTF-8 raise
    :class:`DatasetError` naming the line and column."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(path, line, f"not UTF-8 text (byte 0x{data[e.start]:02x} at column "
                           f"{col}); save the file as UTF-8") from None


def iter_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line, element) of a top-level JSON array, so errors can name an element's line."""
    text = read_text(path)
    dec = json.JSONDecoder()
    n = len(text)

    def skip(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    def line_of(i: int) -> int:
        return text.count("\n", 0, i) + 1

    i = skip(0)
    if i >= n or text[i] != "[":
        raise DatasetError(path, line_of(i), "expected a JSON array (a list of records)")
    i = skip(i + 1)
    if i < n and text[i] == "]":
        return
    while True:
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DatasetError(path, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from e
        yield line_of(i), obj
        i = skip(end)
        if i < n and text[i] == ",":
            i = skip(i + 1)
        elif i < n and text[i] == "]":
            if skip(i + 1) != n:
                raise DatasetError(path, line_of(i + 1), "unexpected text after the JSON array")
            return
        else:
            raise DatasetError(path, line_of(i), "expected ',' or ']' between array elements")


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line, record) of a JSON-lines file; blank lines are skipped."""
    for lineno, raw in enumerate(read_text(path).split("\n"), 1):
        if not raw.strip():  # blank lines (e.g. a trailing one) carry no record
            continue
        try:
            yield lineno, json.loads(raw)
        except json.JSONDecodeError as e:
            raise DatasetError(path, lineno, f"invalid JSON line: {e.msg} (column {e.colno})") from e


def iter_records(path: Path) -> Iterator[tuple[int | None, Any]]:
    """JSON array, ``{"Data": [...]}`` (TriviaQA's official layout) or JSON lines."""
    text = read_text(path)
    head = text.lstrip()[:1]
    if head == "[":
        yield from iter_json_array(path)
        return
    if head == "{":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # JSON lines (or broken: the line reader names the line)
        if isinstance(whole, dict) and "Data" in whole:
            if not isinstance(whole["Data"], list):
                raise DatasetError(path, 1, '"Data" must be a list of records')
            for rec in whole["Data"]:
                yield None, rec  # one JSON document: records have no line of their own
            return
    yield from iter_jsonl(path)


def need_str(path: Path, line: int | None, rec: dict, key: str) -> str:
    val = rec.get(key)
    if not isinstance(val, str) or not val.strip():
        raise DatasetError(path, line, f"field {key!r} missing or not a non-empty string")
    return val.strip()


def need_str_list(path: Path, line: int | None, val: Any, what: str) -> list[str]:
    if not isinstance(val, list) or not all(isinstance(a, str) for a in val):
        raise DatasetError(path, line, f"{what} must be a list of strings")
    out = [a.strip() for a in val if a.strip()]
    if not out:
        raise DatasetError(path, line, f"{what} is empty")
    return out


def need_dict(path: Path, line: int | None, rec: Any) -> dict:
    if not isinstance(rec, dict):
        raise DatasetError(path, line, f"expected a JSON object, got {type(rec).__name__}")
    return rec
