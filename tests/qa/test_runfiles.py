"""read_rows / open_rows: a complete last row without its newline is kept (and ended before
the next append); only a cut-off write is left out, then removed when appending."""

from __future__ import annotations

import json
import warnings

import pytest
from typer.testing import CliRunner

from isograd.cli import app
from isograd.rows.files import append_row, open_rows, read_rows

from ..lm.tiny_lm import save_tiny


def _no_warning(fn, *a):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*a)


def test_complete_last_row_without_newline_is_kept(tmp_path):
    p = tmp_path / "rows.jsonl"
    raw = b'{"id": "a", "v": 1}\n{"id": "b", "v": 2}'
    p.write_bytes(raw)
    assert _no_warning(read_rows, p) == [{"id": "a", "v": 1}, {"id": "b", "v": 2}]
    assert p.read_bytes() == raw  # reading never writes
    with open_rows(p) as f:  # an append starts on a line of its own
        append_row(f, {"id": "c"})
    assert p.read_bytes() == raw + b'\n{"id": "c"}\n'
    assert [r["id"] for r in _no_warning(read_rows, p)] == ["a", "b", "c"]


def test_only_row_without_newline_is_kept(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_bytes(b'{"id": "only"}')
    assert _no_warning(read_rows, p) == [{"id": "only"}]
    with open_rows(p):
        pass
    assert p.read_bytes() == b'{"id": "only"}\n'


def test_cut_off_last_write_is_left_out_with_a_warning_then_removed(tmp_path):
    p = tmp_path / "rows.jsonl"
    raw = b'{"id": "a"}\n{"id": "b", "text": "half'
    p.write_bytes(raw)
    with pytest.warns(RuntimeWarning, match="not valid JSON, a write cut short by a kill"):
        assert read_rows(p) == [{"id": "a"}]
    assert p.read_bytes() == raw  # untouched until something is appended
    with open_rows(p) as f:
        append_row(f, {"id": "b", "text": "whole"})
    assert p.read_bytes() == b'{"id": "a"}\n{"id": "b", "text": "whole"}\n'


def test_complete_last_line_that_is_not_a_row_is_an_error(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_bytes(b'{"id": "a"}\n[1, 2]')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: a row must be a JSON object"):
        read_rows(p)


def test_trailing_blanks_are_ignored_then_dropped(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_bytes(b'{"id": "a"}\n  ')
    assert _no_warning(read_rows, p) == [{"id": "a"}]
    with open_rows(p):
        pass
    assert p.read_bytes() == b'{"id": "a"}\n'


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny"))


def test_user_file_last_row_survives_a_rerun_of_isograd_score(model_dir, tmp_path):
    """A user's --out file whose last valid row has no newline: `isograd score` keeps it,
    skips its id, and appends the new row on a line of its own."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"id": "mine", "prompt": "Why?", "answer": " no"}\n'
                     '{"id": "new", "prompt": "How?", "answer": " so"}\n')
    out = tmp_path / "scored.jsonl"
    runner = CliRunner()
    args = ["score", "--input", str(pairs), "--out", str(out), "--model", str(model_dir),
            "--quiet"]
    first = tmp_path / "first.jsonl"
    res = runner.invoke(app, [*args[:3], "--out", str(first), *args[5:]])
    assert res.exit_code == 0, res.output
    mine = json.loads(first.read_text().splitlines()[0])
    mine["note"] = "kept by the user"  # a field only the user's row has: it must survive
    out.write_text(json.dumps(mine))  # no trailing newline
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["mine", "new"]
    assert rows[0] == mine  # the user's row, untouched
    assert out.read_text().count("\n") == 2 and out.read_text().endswith("\n")
    assert json.loads(out.read_text().splitlines()[1])["id"] == "new"
