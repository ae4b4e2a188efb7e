"""`isograd score` under torchrun (gloo, CPU): merged output equals one process's, resumes
under another world size, a killed rank fails the job and the rerun finishes the rest.

The torchrun command lines are the README's "Scaling out" commands (CPU variants)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .launch import cpu_variant, readme_commands, run

N_PAIRS = 9


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny float64 Llama with its tokenizer, saved so the CLI can load it by path."""
    from tests.lm.tiny_lm import tiny_model, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    rows = [{"id": f"q{i}", "prompt": f"Question {i}: what is {i} plus {i % 4}? Answer:",
             "answer": " " + "seven eleven"[: 2 + i]} for i in range(N_PAIRS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def score_args(folder: Path, pairs: Path, out: Path, *extra: str) -> list[str]:
    return ["isograd", "score", "--input", str(pairs), "--out", str(out), "--model", str(folder),
            "--dtype", "fp64", "--batch-size", "2", "--quiet", *extra]


@pytest.fixture(scope="module")
def readme() -> dict[str, str]:
    lines = readme_commands()
    assert len(lines) == 4, lines
    return dict(zip(["one node", "several nodes", "fsdp", "qa"], lines))


def variant(line: str, pairs: Path, out: Path, folder: Path, **kw) -> list[str]:
    return cpu_variant(line, replace={"--input": str(pairs), "--out": str(out),
                                      "--model": str(folder), "--dtype": "fp64"},
                       extra=["--batch-size", "2", "--quiet"], **kw)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def single(folder, pairs, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("single") / "scores.jsonl"
    proc = run(score_args(folder, pairs, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read(out)
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(N_PAIRS)]
    return rows


def assert_same(got: list[dict], want: list[dict], rtol: float = 1e-10) -> None:
    assert [r["id"] for r in got] == [r["id"] for r in want]
    for g, w in zip(got, want):
        assert g["answer"] == w["answer"] and g["n_tokens"] == w["n_tokens"]
        for key in ("p", "epistemic", "aleatoric"):
            assert abs(g[key] - w[key]) <= rtol * abs(w[key]), (g["id"], key, g[key], w[key])


def test_two_processes_merge_to_the_single_process_file(folder, pairs, single, readme, tmp_path):
    out = tmp_path / "scores.jsonl"
    proc = run(variant(readme["one node"], pairs, out, folder, nproc=2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same(read(out), single)
    assert not list(tmp_path.glob("scores.jsonl.part*"))  # merged and removed


def test_fsdp_sharded_model_gives_the_same_file(folder, pairs, single, readme, tmp_path):
    # 9 pairs in batches of 2: rank 1 runs one batch fewer of its own and must keep in step
    out = tmp_path / "scores.jsonl"
    assert "--shard fsdp" in readme["fsdp"]
    proc = run(variant(readme["fsdp"], pairs, out, folder, nproc=2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same(read(out), single)


def test_two_nodes_rendezvous_on_localhost(folder, pairs, single, readme, tmp_path):
    import subprocess

    from .launch import env, free_port

    out = tmp_path / "scores.jsonl"
    port = free_port()
    cmds = [variant(readme["several nodes"], pairs, out, folder, nproc=1, node_rank=r, port=port)
            for r in (0, 1)]
    procs = [subprocess.Popen(c, env=env(), cwd=Path(__file__).parents[2], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cmds]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    assert_same(read(out), single)


def test_resume_from_one_process_under_two(folder, pairs, single, readme, tmp_path):
    first = tmp_path / "first.jsonl"
    first.write_text("".join(pairs.read_text().splitlines(keepends=True)[:4]))
    out = tmp_path / "scores.jsonl"
    assert run(score_args(folder, first, out)).returncode == 0
    assert len(read(out)) == 4
    cmd = variant(readme["one node"], pairs, out, folder, nproc=2)
    proc = run(cmd[:-1])  # without --quiet: the count is printed
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"scored {N_PAIRS - 4} pair(s)" in proc.stdout
    assert_same(read(out), single)


KILL_RANK_1 = '''
import os, signal, sys, time
if os.environ.get("RANK") == "1":
    import isograd.rows.runner as sp  # the row loop: its append_row is the one it calls
    _append, _n = sp.append_row, [0]
    part0 = sys.argv[sys.argv.index("--out") + 1] + ".part0"
    def append_row(f, row):
        _append(f, row)
        _n[0] += 1
        if _n[0] == 2:  # killed mid-run: two rows of its share on disk, rank 0 scoring too
            while not (os.path.exists(part0) and os.path.getsize(part0)):
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)
    sp.append_row = append_row
'''


def test_killed_rank_fails_the_job_and_rerun_under_one_process_finishes(
        folder, pairs, single, readme, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_RANK_1)
    out = tmp_path / "scores.jsonl"
    cmd = variant(readme["one node"], pairs, out, folder, nproc=2)
    proc = run(cmd, PYTHONPATH_FIRST=str(hook))
    assert proc.returncode != 0
    assert "Root Cause" in proc.stderr and "SIGKILL" in proc.stderr  # torchrun names the rank
    parts = sorted(tmp_path.glob("scores.jsonl.part*"))
    kept = sum(len(read(p)) for p in parts)
    assert parts and 2 <= kept < N_PAIRS
    proc = run(score_args(folder, pairs, out)[:-1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"scored {N_PAIRS - kept} pair(s)" in proc.stdout
    assert_same(read(out), single)
    assert not list(tmp_path.glob("scores.jsonl.part*"))


def test_changed_answers_rescored_under_two_processes(folder, pairs, single, readme, tmp_path):
    """Two answers changed keeping their ids (one in each rank's share of the rerun): both rows
    recomputed under two processes, every other row kept, each id once in the merged file."""
    out = tmp_path / "scores.jsonl"
    first = read(pairs)
    for i in (2, 5):
        first[i] = {**first[i], "answer": " something else"}
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in first))
    assert run(score_args(folder, edited, out)).returncode == 0
    stale = {r["id"]: r for r in read(out)}
    proc = run(variant(readme["one node"], pairs, out, folder, nproc=2)[:-1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scored 2 pair(s)" in proc.stdout
    got = read(out)
    assert_same(got, single)  # q2 and q5 now hold the pairs' real answers
    assert [r for r in got if r["id"] not in ("q2", "q5")] == [
        stale[r["id"]] for r in got if r["id"] not in ("q2", "q5")]
