"""Rows that cannot go stale: `isograd score` and `isograd qa` rows carry the fingerprint of
their input; a rerun after the input was edited, extended or reordered recomputes exactly the
rows whose input changed, never keeps an old row, never scores a pair twice."""

from __future__ import annotations

import json
import shutil

import pytest

from isograd.lm import score
from isograd.qa.options import SCORE
from isograd.qa.pipeline import run_qa
from isograd.qa.score_pairs import pair_id, score_file
from isograd.rows.files import read_rows

from .conftest import no_cost

PAIRS = [("What is one plus one?", " two"), ("Name a colour.", " red"),
         ("Capital of France?", " Paris")]


def write(path, pairs, ids=None):
    recs = [{"prompt": p, "answer": a, **({"id": ids[i]} if ids else {})}
            for i, (p, a) in enumerate(pairs)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def by_content(rows):
    return {(r["prompt"], r["answer"]): r for r in rows}


def reference(lm, prompt, answer):
    """p of one pair scored alone: the independent value each row must hold."""
    model, tok = lm
    return float(score(model, tok, [prompt], [answer], batch_size=1,
                       prediction=SCORE["prediction"].default).p[0])


def test_default_ids_come_from_the_content_not_the_line(lm, tmp_path):
    inp, out = tmp_path / "pairs.jsonl", tmp_path / "out.jsonl"
    write(inp, PAIRS)
    assert score_file(inp, out, loaded=lm, progress=False) == 3
    first = by_content(read_rows(out))
    # a new pair at the top, the rest reordered: only the new pair is scored
    new = ("Is ice cold?", " yes")
    write(inp, [new, PAIRS[2], PAIRS[0], PAIRS[1]])
    assert score_file(inp, out, loaded=lm, progress=False) == 1
    rows = read_rows(out)
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4  # no pair twice
    assert sorted(by_content(rows)) == sorted([new, *PAIRS])
    for pair in PAIRS:  # kept as they were
        assert by_content(rows)[pair] == first[pair]
    assert by_content(rows)[new]["id"] == pair_id(*new)
    assert by_content(rows)[new]["p"] == pytest.approx(reference(lm, *new), rel=1e-6)
    # an answer edited in place (no ids): a new pair, the old row is no row of this input
    write(inp, [new, PAIRS[2], PAIRS[0], ("Name a colour.", " blue")])
    assert score_file(inp, out, loaded=lm, progress=False) == 1
    assert ("Name a colour.", " blue") in by_content(read_rows(out))


def test_same_id_other_answer_is_rescored(lm, tmp_path):
    inp, out = tmp_path / "pairs.jsonl", tmp_path / "out.jsonl"
    write(inp, PAIRS, ids=["a", "b", "c"])
    assert score_file(inp, out, loaded=lm, progress=False) == 3
    before = {r["id"]: r for r in read_rows(out)}
    edited = [PAIRS[0], ("Name a colour.", " green"), PAIRS[2]]
    write(inp, edited, ids=["a", "b", "c"])
    with pytest.warns(RuntimeWarning, match="another input.*'b'"):
        assert score_file(inp, out, loaded=lm, progress=False) == 1
    rows = read_rows(out)
    assert sorted(r["id"] for r in rows) == ["a", "b", "c"]  # one row each
    got = {r["id"]: r for r in rows}
    assert got["b"]["answer"] == " green"
    assert got["b"]["p"] == pytest.approx(reference(lm, *edited[1]), rel=1e-6)
    assert got["b"]["p"] != pytest.approx(before["b"]["p"], rel=1e-6)
    assert got["a"] == before["a"] and got["c"] == before["c"]
    assert score_file(inp, out, loaded=lm, progress=False) == 0


def test_rows_without_fingerprint_are_checked_by_their_stored_pair(lm, tmp_path):
    """Rows written before ``input_fp`` existed: kept while their stored prompt and answer are
    the pair's, recomputed once they differ."""
    inp, out = tmp_path / "pairs.jsonl", tmp_path / "out.jsonl"
    write(inp, PAIRS, ids=["a", "b", "c"])
    score_file(inp, out, loaded=lm, progress=False)
    old = [{k: v for k, v in r.items() if k != "input_fp"} for r in read_rows(out)]
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert score_file(inp, out, loaded=lm, progress=False) == 0
    assert read_rows(out) == old  # untouched
    write(inp, [PAIRS[0], PAIRS[1], ("Capital of Spain?", " Madrid")], ids=["a", "b", "c"])
    with pytest.warns(RuntimeWarning, match="'c'"):
        assert score_file(inp, out, loaded=lm, progress=False) == 1
    rows = read_rows(out)
    assert rows[:2] == old[:2] and rows[2]["answer"] == " Madrid" and "input_fp" in rows[2]


def test_qa_rows_of_an_edited_question_are_recomputed(lm, tmp_path):
    """A user's dataset edited keeping its ids: that question's rows are redone in every stage,
    the others' kept byte for byte (timings aside)."""
    data = tmp_path / "qs.jsonl"
    qs = [{"id": f"q{i}", "question": f"What is {i} plus {i}?", "answers": [str(2 * i)]}
          for i in range(3)]
    data.write_text("".join(json.dumps(q) + "\n" for q in qs))
    kw = dict(dataset=str(data), methods=("msp",), max_new_tokens=4, progress=False,
              loaded=lm)
    out = tmp_path / "run"
    run_qa(out, **kw)
    stages = ("generate", "grade", "score", "baseline-msp")
    before = {s: {r["id"]: r for r in read_rows(out / f"{s}.jsonl")} for s in stages}
    qs[1] = {"id": "q1", "question": "Name the largest planet.", "answers": ["Jupiter"]}
    data.write_text("".join(json.dumps(q) + "\n" for q in qs))
    with pytest.warns(RuntimeWarning, match="another input"):
        run_qa(out, **kw)
    fresh = tmp_path / "fresh"
    run_qa(fresh, **{**kw})
    for s in stages:
        rows = {r["id"]: r for r in read_rows(out / f"{s}.jsonl")}
        assert sorted(rows) == ["q0", "q1", "q2"], s
        assert no_cost([rows["q0"], rows["q2"]]) == no_cost([before[s]["q0"], before[s]["q2"]])
        want = {r["id"]: r for r in read_rows(fresh / f"{s}.jsonl")}["q1"]
        assert no_cost([rows["q1"]]) == no_cost([want]), s
    assert {r["id"]: r for r in read_rows(out / "generate.jsonl")}["q1"]["question"] == (
        "Name the largest planet.")
    assert all("input_fp" not in r for r in read_rows(out / "scores.jsonl"))  # the view
    shutil.rmtree(fresh)


def test_memory_budget_splits_batches_by_length_same_rows(lm, tmp_path, monkeypatch):
    """A budget of 60 padded tokens: the batch of 4 is split (short pairs together, the long
    one alone), and the rows equal those of batch size 1."""
    import isograd.lm as lm_api
    from isograd.lm.memory import bytes_per_token

    model, tok = lm
    pairs = [("Hi?", " yes"), ("Tell me something about the weather here", " no"),
             ("Why?", " no"), ("Ok?", " ok")]
    inp = tmp_path / "pairs.jsonl"
    write(inp, pairs, ids=list("abcd"))
    one = tmp_path / "one.jsonl"
    score_file(inp, one, loaded=lm, progress=False, batch_size=1)
    calls, real = [], lm_api.score

    def watch(m, t, prompts, answers, **kw):
        ids = [len(t(p + a, add_special_tokens=False)["input_ids"]) for p, a in zip(prompts, answers)]
        calls.append(len(ids) * max(ids))
        return real(m, t, prompts, answers, **kw)

    monkeypatch.setattr(lm_api, "score", watch)
    out = tmp_path / "split.jsonl"
    score_file(inp, out, loaded=lm, progress=False, batch_size=4,
               memory_budget=60 * bytes_per_token(model))
    assert len(calls) >= 2 and max(calls) <= 60
    got, want = read_rows(out), read_rows(one)
    assert [r["id"] for r in got] == list("abcd")
    for g, w in zip(got, want):
        for k in ("p", "epistemic", "aleatoric"):
            assert g[k] == pytest.approx(w[k], rel=1e-5), (g["id"], k)


def test_pair_too_large_for_the_budget_refused_before_any_row(lm, tmp_path):
    from isograd.lm.memory import bytes_per_token

    inp, out = tmp_path / "pairs.jsonl", tmp_path / "out.jsonl"
    write(inp, [("Hi?", " yes"), ("Tell me something about the weather here", " no")],
          ids=["short", "long"])
    with pytest.raises(ValueError, match=r"pair 'long' .* tokens, more than the memory budget "
                                         r"allows in one pass \(20 tokens of"):
        score_file(inp, out, loaded=lm, progress=False,
                   memory_budget=20.5 * bytes_per_token(lm[0]))
    assert not out.exists()


def test_output_with_line_number_ids_of_earlier_versions_is_refused(lm, tmp_path):
    """An output of an earlier version (default ids ``line-<n>``, no ``input_fp``) would be
    scored again beside its old rows under the content ids: refused, naming the way out."""
    inp, out = tmp_path / "pairs.jsonl", tmp_path / "out.jsonl"
    write(inp, PAIRS, ids=["line-1", "line-2", "line-3"])
    score_file(inp, out, loaded=lm, progress=False)
    old = [{k: v for k, v in r.items() if k != "input_fp"} for r in read_rows(out)]
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    before = out.read_bytes()
    write(inp, PAIRS)  # no ids: now pair-<hash>
    with pytest.raises(ValueError, match=r"line-number ids \(e\.g\. 'line-1'\).*\"id\""):
        score_file(inp, out, loaded=lm, progress=False)
    assert out.read_bytes() == before
    write(inp, PAIRS, ids=["line-1", "line-2", "line-3"])  # the way out: resumes, nothing to do
    assert score_file(inp, out, loaded=lm, progress=False) == 0
