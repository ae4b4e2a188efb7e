"""Datasets: parsing, resolution order, malformed files, the real local copies (row counts)."""

from __future__ import annotations

import json
import os
import urllib.error
from pathlib import Path

import pytest

from isograd.qa import datasets as D
from isograd.qa.datasets import DATASETS, DatasetError, Question, load_dataset, resolve_dataset
from isograd.qa.questions import unique_ids

PACKAGED = D.PACKAGED_DATA  # the copies shipped inside the package (the fixture hides them)
# the 2021 TruthfulQA files are not shipped: a folder holding them may be named by $ISOGRAD_DATA
V0 = Path(os.environ.get("ISOGRAD_DATA", "/nonexistent")) / "truthfulqa" / "v0"

TQA_HEADER = "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No network, no real cache, no packaged copies, no ambient ISOGRAD_DATA unless a test
    sets them."""
    monkeypatch.setenv("ISOGRAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ISOGRAD_DATA", raising=False)
    monkeypatch.setattr(D, "PACKAGED_DATA", tmp_path / "packaged")

    def no_net(*a, **k):
        raise AssertionError("network used")

    monkeypatch.setattr(D.urllib.request, "urlopen", no_net)


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding=encoding)
    return p


def tqa_csv(tmp_path: Path, rows: list[str], header: str = TQA_HEADER) -> Path:
    return write(tmp_path, "TruthfulQA.csv", header + "".join(rows), encoding="utf-8-sig")


# --------------------------------------------------------------------- parsing


def test_truthfulqa_csv_bom_split_and_dedupe(tmp_path):
    p = tqa_csv(tmp_path, [
        'Adversarial,Misc,Q one?,Best,"Best; Other;",Wrong A; Wrong B;,src\n',
        'Adversarial,Misc,"Q two,\nwith newline?",B2,C2,W2,src\n',
    ])
    with pytest.warns(UserWarning, match="sha256"):
        qs = load_dataset("truthfulqa-gen", data=p)
    assert [q.question for q in qs] == ["Q one?", "Q two,\nwith newline?"]
    assert qs[0].answers == ("Best", "Other")  # Best Answer first, deduplicated, trailing ';' dropped
    assert qs[0].incorrect == ("Wrong A", "Wrong B")
    assert qs[0].dataset == "truthfulqa-gen" and qs[0].label is None
    assert len({q.id for q in qs}) == 2


def test_truthfulqa_csv_wrong_header_names_file_and_line(tmp_path):
    p = tqa_csv(tmp_path, ["a,b,c\n"], header="Type,Category,Question,Answer\n")
    with pytest.warns(UserWarning), pytest.raises(DatasetError) as ei:
        load_dataset("truthfulqa-gen", data=p)
    assert ei.value.line == 1 and ei.value.path == p
    assert str(p) in str(ei.value) and "Correct Answers" in str(ei.value)


@pytest.mark.parametrize("row, msg", [
    ("Adv,Cat,,Best,C,W,src\n", "empty Question"),
    ("Adv,Cat,Q?,Best,C,,src\n", "no incorrect"),
    ("Adv,Cat,Q?,Best\n", "cells per row"),
])
def test_truthfulqa_csv_bad_rows(tmp_path, row, msg):
    p = tqa_csv(tmp_path, ["Adv,Cat,Fine?,B,C,W,src\n", row])
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match=msg) as ei:
        load_dataset("truthfulqa-gen", data=p)
    assert ei.value.line == 3


def test_mc1_options_in_file_order_and_label(tmp_path):
    data = [{"question": "Q?", "mc1_targets": {"wrong 1": 0, "right": 1, "wrong 2": 0},
             "mc2_targets": {}}]
    p = write(tmp_path, "mc_task.json", json.dumps(data, indent=2))
    with pytest.warns(UserWarning):
        (q,) = load_dataset("truthfulqa-mc1", data=p)
    assert q.options == ("wrong 1", "right", "wrong 2") and q.label == 1
    assert q.answers == ("right",) and q.incorrect == ("wrong 1", "wrong 2")


@pytest.mark.parametrize("item, msg", [
    ({"question": "Q?", "mc1_targets": {"a": 1, "b": 1}}, "exactly one 1"),
    ({"question": "Q?"}, "mc1_targets"),
    ({"mc1_targets": {"a": 1}}, "'question'"),
    (["not", "an", "object"], "JSON object"),
])
def test_mc1_malformed_item_names_its_line(tmp_path, item, msg):
    good = {"question": "Fine?", "mc1_targets": {"a": 1, "b": 0}}
    p = write(tmp_path, "mc_task.json", json.dumps([good, item], indent=2))
    first_line_of_item = json.dumps([good, item], indent=2).splitlines().index(
        "  {" if isinstance(item, dict) else "  [", 2) + 1
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match=msg) as ei:
        load_dataset("truthfulqa-mc1", data=p)
    assert ei.value.line == first_line_of_item


def test_json_syntax_error_names_line(tmp_path):
    p = write(tmp_path, "mc_task.json", '[\n {"question": "Q?",\n  "mc1_targets": {"a": 1,}\n }\n]')
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="invalid JSON") as ei:
        load_dataset("truthfulqa-mc1", data=p)
    assert ei.value.line == 3


def test_nq_open_bad_line_and_missing_field(tmp_path):
    good = json.dumps({"question": "q", "answer": ["a"]})
    p = write(tmp_path, "nq.jsonl", f"{good}\n\n{{not json\n")
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="invalid JSON line") as ei:
        load_dataset("nq-open", data=p)
    assert ei.value.line == 3
    p = write(tmp_path, "nq.jsonl", f'{good}\n{json.dumps({"question": "q2", "answer": "a"})}\n')
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="list of strings") as ei:
        load_dataset("nq-open", data=p)
    assert ei.value.line == 2


def test_triviaqa_layouts_and_duplicate_ids(tmp_path):
    sample = [{"qid": "t1", "question": "Q1?", "gold_answer": "Paris", "aliases": ["paris", "Paris"]}]
    p = write(tmp_path, "a.json", json.dumps(sample))
    with pytest.warns(UserWarning):
        (q,) = load_dataset("triviaqa", data=p)
    assert q.id == "t1" and q.answers == ("Paris", "paris")
    hf = "\n".join(json.dumps({"question_id": f"h{i}", "question": f"Q{i}?",
                               "answer": {"value": "X", "aliases": ["X", "Ex"]}}) for i in range(3))
    with pytest.warns(UserWarning):
        qs = load_dataset("triviaqa", data=write(tmp_path, "b.jsonl", hf))
    assert [q.id for q in qs] == ["h0", "h1", "h2"] and qs[0].answers == ("X", "Ex")
    official = {"Data": [{"Question": "Q?", "QuestionId": "o1", "Answer": {"Value": "V", "Aliases": ["v"]}}]}
    with pytest.warns(UserWarning):
        (q,) = load_dataset("triviaqa", data=write(tmp_path, "c.json", json.dumps(official)))
    assert q.id == "o1" and q.answers == ("V", "v")
    foundry = "\n".join(json.dumps({"context": f"Question: Q{i}?\nAnswer:", "answer": "A",
                                    "aliases": ["a", "A"]}) for i in range(2))
    with pytest.warns(UserWarning):
        qs = load_dataset("triviaqa", data=write(tmp_path, "f.jsonl", foundry))
    assert [q.question for q in qs] == ["Q0?", "Q1?"] and qs[0].answers == ("A", "a")
    assert qs[0].id == unique_ids("triviaqa", ["Q0?"])[0]  # from the question text
    bad = json.dumps({"context": "Question: \nAnswer:", "answer": "A", "aliases": ["A"]})
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="'context'") as ei:
        load_dataset("triviaqa", data=write(tmp_path, "g.jsonl", "\n" + bad))
    assert ei.value.line == 2
    dup = json.dumps(sample + sample, indent=1)
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="duplicate id"):
        load_dataset("triviaqa", data=write(tmp_path, "d.json", dup))


def test_ids_stable_under_limit_and_reordering(tmp_path):
    lines = [json.dumps({"question": f"q{i}", "answer": ["a"]}) for i in range(5)]
    p1 = write(tmp_path, "x.jsonl", "\n".join(lines))
    p2 = write(tmp_path, "y.jsonl", "\n".join(reversed(lines)))
    with pytest.warns(UserWarning):
        full = {q.question: q.id for q in load_dataset("nq-open", data=p1)}
        rev = {q.question: q.id for q in load_dataset("nq-open", data=p2)}
        lim = load_dataset("nq-open", data=p1, limit=2)
    assert full == rev and len(set(full.values())) == 5
    assert [q.id for q in lim] == [full["q0"], full["q1"]]


def test_repeated_question_text_gets_distinct_ids(tmp_path):
    line = json.dumps({"question": "same", "answer": ["a"]})
    with pytest.warns(UserWarning):
        qs = load_dataset("nq-open", data=write(tmp_path, "x.jsonl", f"{line}\n{line}\n"))
    assert len({q.id for q in qs}) == 2 and qs[1].id == qs[0].id + "-2"


def test_limit_validation_and_warning(tmp_path):
    p = write(tmp_path, "x.jsonl", json.dumps({"question": "q", "answer": ["a"]}))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="limit"):
            load_dataset("nq-open", data=p, limit=bad)
    with pytest.warns(UserWarning) as rec:
        assert len(load_dataset("nq-open", data=p, limit=10)) == 1
    assert any("only 1 questions" in str(w.message) for w in rec)


def test_empty_file_is_an_error(tmp_path):
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="no questions"):
        load_dataset("nq-open", data=write(tmp_path, "x.jsonl", "\n"))


# --------------------------------------------------------------------- resolution


def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError, match="truthfulqa-gen"):
        load_dataset("squad")


def test_resolution_order(tmp_path, monkeypatch):
    rel = DATASETS["nq-open"].relpath
    envdir, cache = tmp_path / "env", tmp_path / "cache" / "data"
    packaged = tmp_path / "packaged"
    write(envdir, rel, json.dumps({"question": "from env", "answer": ["a"]}))
    write(cache, rel, json.dumps({"question": "from cache", "answer": ["a"]}))
    explicit = write(tmp_path, "mine.jsonl", json.dumps({"question": "explicit", "answer": ["a"]}))
    assert resolve_dataset("nq-open") == cache / rel  # nothing packaged: the user cache
    write(packaged, rel, json.dumps({"question": "packaged", "answer": ["a"]}))
    assert resolve_dataset("nq-open") == packaged / rel  # the packaged copy before the cache
    monkeypatch.setenv("ISOGRAD_DATA", str(envdir))
    assert resolve_dataset("nq-open") == envdir / rel  # $ISOGRAD_DATA overrides the package
    assert resolve_dataset("nq-open", data=explicit) == explicit
    assert resolve_dataset("nq-open", data=envdir) == envdir / rel  # a dir in the same layout
    flat = tmp_path / "flat"
    write(flat, Path(rel).name, "{}")
    assert resolve_dataset("nq-open", data=flat) == flat / Path(rel).name  # the file in the dir
    with pytest.raises(FileNotFoundError, match="no data file"):
        resolve_dataset("nq-open", data=tmp_path / "missing.jsonl")  # explicit: no fallback


def test_offline_never_downloads_and_says_so(monkeypatch):
    with pytest.raises(FileNotFoundError) as ei:
        resolve_dataset("triviaqa")  # the autouse fixture makes urlopen fail loudly
    msg = str(ei.value)
    assert "downloads are off" in msg and "ISOGRAD_OFFLINE=0" in msg and "ISOGRAD_DATA" in msg
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("ISOGRAD_OFFLINE", raising=False)
    with pytest.raises(FileNotFoundError, match="downloads are off"):
        resolve_dataset("triviaqa")  # offline is the default: no variable set, no download


def test_online_download_into_cache(tmp_path, monkeypatch):
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("ISOGRAD_OFFLINE", "0")
    body = json.dumps([{"qid": "d1", "question": "Q?", "aliases": ["A"]}]).encode()
    calls = []

    class Resp:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return body

    def fake(req, timeout):
        calls.append((req.full_url, timeout))
        return Resp()

    monkeypatch.setattr(D.urllib.request, "urlopen", fake)
    with pytest.warns(UserWarning, match="sha256"):
        (q,) = load_dataset("triviaqa")
    assert calls == [(DATASETS["triviaqa"].url, D.DOWNLOAD_TIMEOUT_S)] and q.id == "d1"
    assert (tmp_path / "cache" / "data" / DATASETS["triviaqa"].relpath).read_bytes() == body
    with pytest.warns(UserWarning):
        load_dataset("triviaqa")
    assert len(calls) == 1  # the second load reads the cached copy


def test_unreachable_network_is_reported(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("ISOGRAD_OFFLINE", "0")

    def down(req, timeout):
        raise urllib.error.URLError("no route")

    monkeypatch.setattr(D.urllib.request, "urlopen", down)
    with pytest.raises(FileNotFoundError, match="URLError"):
        resolve_dataset("nq-open")


@pytest.mark.parametrize("isograd, hf, off", [
    (None, None, True),  # the default: offline
    ("1", None, True), ("0", None, False), ("false", None, False), ("", None, True),
    ("0", "1", True),  # the hub's own switch wins: no network on this machine
    ("0", "0", False), (None, "0", True)])
def test_offline_flag_values(monkeypatch, isograd, hf, off):
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "ISOGRAD_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    if isograd is not None:
        monkeypatch.setenv("ISOGRAD_OFFLINE", isograd)
    if hf is not None:
        monkeypatch.setenv("HF_DATASETS_OFFLINE", hf)
    assert D.offline() is off


def test_cache_dir_matches_lm_models(monkeypatch):
    monkeypatch.delenv("ISOGRAD_CACHE", raising=False)
    models = pytest.importorskip("isograd.lm.models")
    assert D.data_cache_dir() == models.cache_dir() / "data"


# --------------------------------------------------------------------- the real files


@pytest.mark.parametrize("name, n", [("truthfulqa-gen", 817), ("truthfulqa-mc1", 817),
                                     ("triviaqa", 3000), ("triviaqa-150", 150),
                                     ("nq-open", 3610), ("arc-easy-train", 2251),
                                     ("arc-easy-validation", 570), ("arc-easy-test", 2376)])
def test_packaged_files_row_counts_and_versions(monkeypatch, name, n):
    import warnings

    monkeypatch.setattr(D, "PACKAGED_DATA", PACKAGED)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known sha256: no warning
        qs = load_dataset(name)
    path = resolve_dataset(name)
    assert path == PACKAGED / DATASETS[name].relpath  # nothing outside the package was read
    assert len(qs) == n and len({q.id for q in qs}) == n
    assert all(isinstance(q, Question) and q.question and q.answers for q in qs)
    assert D.dataset_version(name, path) is not None
    assert (path.parent / "README.md").is_file()  # provenance and sha256 beside the file
    assert any(f.name.startswith("LICENSE") for f in path.parent.iterdir())
    if name == "truthfulqa-gen":
        assert all(q.incorrect for q in qs)
    if name.startswith("arc-easy"):
        assert all(q.options[q.label] == q.answers[0] for q in qs)
    if name == "truthfulqa-mc1":
        assert all(q.options[q.label] == q.answers[0] for q in qs)
        gen_ids = {q.id for q in load_dataset("truthfulqa-gen")}
        assert len(gen_ids & {q.id for q in qs}) > 800  # same question text, same id
    if name == "triviaqa":  # the "Question: ...\nAnswer:" wrapper is gone; answer first
        q = qs[0]
        assert q.question == "Brunswick, Lancastrian and Pearl Pickler are types of which vegetable?"
        assert q.answers[0] == "Onion" and "Allium cepa" in q.answers
        assert all(not q.question.startswith("Question") and "Answer:" not in q.question
                   for q in qs)
        assert all(q.id.startswith("triviaqa-") for q in qs)
        old = {q.question for q in load_dataset("triviaqa-150")}
        assert len(old & {q.question for q in qs}) == 40  # the overlap the provenance states


@pytest.mark.skipif(not V0.is_dir(), reason="the 2021 TruthfulQA files are not shipped; "
                    "set ISOGRAD_DATA to a folder holding truthfulqa/v0/ to run this test")
def test_real_truthfulqa_v0_is_a_known_version(monkeypatch):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qs = load_dataset("truthfulqa-gen", data=V0 / "TruthfulQA.csv")
    assert len(qs) == 817


# --------------------------------------------------------------------- ARC-Easy


def test_arc_easy_sha256_options_and_labels_from_the_raw_lines(monkeypatch):
    import hashlib
    import json
    import re
    from collections import Counter

    monkeypatch.setattr(D, "PACKAGED_DATA", PACKAGED)
    readme = (PACKAGED / "arc_easy" / "README.md").read_text()
    for split in ("train", "validation", "test"):
        path = PACKAGED / "arc_easy" / f"ARC-Easy-{split}.jsonl"
        row = re.search(rf"\| ARC-Easy-{split}\.jsonl \| (\d+) \| (\d+) \| ([0-9a-f]{{64}}) \|", readme)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row.group(3)
        assert DATASETS[f"arc-easy-{split}"].sha256 == {row.group(3): "ai2_arc"}
        raw = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        qs = load_dataset(f"arc-easy-{split}")
        assert len(qs) == len(raw) == int(row.group(2))
        for q, r in zip(qs, raw):  # the key's text is the label's option; ids from the file
            assert q.id == f"arc-{r['id']}" and q.dataset == f"arc-easy-{split}"
            assert q.options[q.label] == r["choices"]["text"][r["choices"]["label"].index(r["answerKey"])]
            assert len(q.options) == len(r["choices"]["text"]) and len(q.incorrect) == len(q.options) - 1
        if split == "test":
            assert Counter(len(q.options) for q in qs) == {4: 2365, 3: 7, 5: 4}


@pytest.mark.parametrize("rec, msg", [
    ({"id": "a", "question": "Q?", "choices": {"text": ["x", "y"], "label": ["A", "B"]},
      "answerKey": "C"}, "'answerKey'"),
    ({"id": "a", "question": "Q?", "choices": {"text": ["x", "y"], "label": ["A"]},
      "answerKey": "A"}, "2 texts but 1 labels"),
    ({"id": "a", "question": "Q?", "choices": {"text": ["x", 3], "label": ["A", "B"]},
      "answerKey": "A"}, "'choices.text'"),
    ({"question": "Q?", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "A"},
     "'id'"),
])
def test_arc_malformed_line_names_file_line_and_field(tmp_path, rec, msg):
    import json

    good = {"id": "ok", "question": "Fine?", "choices": {"text": ["a", "b"], "label": ["1", "2"]},
            "answerKey": "2"}
    p = tmp_path / "arc.jsonl"
    p.write_text(json.dumps(good) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(DatasetError, match=msg) as e:
        load_dataset("arc-easy-test", data=p)
    assert "arc.jsonl:2" in str(e.value)
    p.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(DatasetError, match="duplicate id 'ok'"):
        load_dataset("arc-easy-test", data=p)
