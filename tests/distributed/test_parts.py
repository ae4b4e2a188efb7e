"""Rank shares, part files and the merge, in one process (no process group needed)."""

from __future__ import annotations

import json

import pytest

from isograd.lm.fsdp import Shard, shard_model
from isograd.rows import ranks as dd


def write(path, ids, extra=""):
    with path.open("w") as f:
        for i in ids:
            f.write(json.dumps({"id": i, "v": i}) + "\n")
        f.write(extra)


def test_shares_cover_every_item_once_for_any_world_size():
    items = list(range(11))
    for world in (1, 2, 3, 5, 12):
        shares = [dd.share(items, dd.Rank(r, world)) for r in range(world)]
        assert sorted(x for s in shares for x in s) == items
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        # lockstep batches of 2: those of the largest share, counted by chunking it
        chunks = [len(range(0, len(sh), 2)) for sh in shares]
        assert dd.steps(len(items), dd.Rank(0, world), 2) == max(chunks)
    # by hand, 11 items in batches of 2: shares 11 | 6,5 | 4,4,3 | 3,2,2,2,2 | 1,...,1,0
    assert [dd.steps(11, dd.Rank(0, w), 2) for w in (1, 2, 3, 5, 12)] == [6, 3, 2, 2, 1]


def test_part_path_is_the_output_itself_in_one_process(tmp_path):
    out = tmp_path / "s.jsonl"
    assert dd.part_path(out, dd.Rank()) == out
    assert dd.part_path(out, dd.Rank(3, 4)).name == "s.jsonl.part3"


def test_merge_orders_by_input_keeps_extras_and_removes_parts(tmp_path):
    out = tmp_path / "s.jsonl"
    write(out, ["c", "zz"])                       # an earlier run, with a row not in the input
    write(tmp_path / "s.jsonl.part0", ["a", "e"])
    write(tmp_path / "s.jsonl.part10", ["b"], extra='{"id": "d", "v"')  # cut off by a kill
    write(tmp_path / "s.jsonl.partial", ["x"])    # not a part file: left alone
    assert [p.name for p in dd.part_files(out)] == ["s.jsonl.part0", "s.jsonl.part10"]
    assert sorted(r["id"] for r in dd.read_all(out)) == ["a", "b", "c", "e", "zz"]
    assert dd.merge(out, ["a", "b", "c", "d", "e"]) == 5
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a", "b", "c", "e", "zz"]
    assert dd.part_files(out) == [] and (tmp_path / "s.jsonl.partial").exists()


def test_merge_refuses_a_conflicting_duplicate_naming_both_files(tmp_path):
    out = tmp_path / "s.jsonl"
    write(out, ["a"])
    (tmp_path / "s.jsonl.part1").write_text(json.dumps({"id": "a", "v": "other"}) + "\n")
    with pytest.raises(ValueError, match=r"'a'.*s\.jsonl.*s\.jsonl\.part1.*different"):
        dd.merge(out, ["a"])
    assert (tmp_path / "s.jsonl.part1").exists()  # nothing removed


def test_merge_keeps_one_copy_of_an_identical_duplicate(tmp_path):
    out = tmp_path / "s.jsonl"
    write(out, ["a", "b"])
    write(tmp_path / "s.jsonl.part0", ["b"])
    assert dd.merge(out, ["a", "b"]) == 2
    assert [json.loads(x) for x in out.read_text().splitlines()] == [
        {"id": "a", "v": "a"}, {"id": "b", "v": "b"}]


KILLED_MERGE = """
import os, signal, sys
from pathlib import Path
import isograd.rows.ranks as dd
real = dd.rewrite_rows
def rewrite_then_die(path, rows):
    real(path, rows)
    os.kill(os.getpid(), signal.SIGKILL)  # between rewriting the output and removing the parts
dd.rewrite_rows = rewrite_then_die
dd.merge(Path(sys.argv[1]), ["a", "b", "c", "d"])
"""


def test_merge_killed_between_its_two_steps_then_rerun(tmp_path):
    """A real kill (SIGKILL) after the output is rewritten, before the parts are removed: every
    row is then in both places; the rerun merges to the file an uninterrupted merge writes."""
    import subprocess
    import sys

    out = tmp_path / "s.jsonl"
    write(out, ["c"])
    write(tmp_path / "s.jsonl.part0", ["a", "d"])
    write(tmp_path / "s.jsonl.part1", ["b"])
    ref = tmp_path / "ref"
    ref.mkdir()
    for f in ("s.jsonl", "s.jsonl.part0", "s.jsonl.part1"):
        (ref / f).write_bytes((tmp_path / f).read_bytes())
    proc = subprocess.run([sys.executable, "-c", KILLED_MERGE, str(out)])
    assert proc.returncode == -9
    assert len(dd.part_files(out)) == 2 and len(dd.read_all(out)) == 7  # in both places
    assert dd.merge(out, ["a", "b", "c", "d"]) == 4
    assert dd.merge(ref / "s.jsonl", ["a", "b", "c", "d"]) == 4
    assert out.read_bytes() == (ref / "s.jsonl").read_bytes()
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a", "b", "c", "d"]
    assert dd.part_files(out) == []


def test_outside_torchrun_one_rank_and_no_sharding(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dd.setup("cpu") == dd.Rank() and dd.Rank().main
    assert dd.device_for("cuda", dd.Rank()) == "cuda"
    assert dd.device_for("cuda", dd.Rank(1, 2, 1)) == "cuda:1"
    with pytest.raises(ValueError, match="torchrun"):
        shard_model(object(), dd.Rank())
    with pytest.raises(ValueError, match="none.*fsdp"):
        Shard.parse("zero3")
