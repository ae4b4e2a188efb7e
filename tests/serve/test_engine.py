"""The engine's pure pieces: stop sequences over multi-character tokens, failures kept alone."""

from __future__ import annotations

import pytest

from isograd.serve.engine import cut_at_stop, each_or_alone


class Pieces:
    """A tokenizer whose tokens are multi-character pieces (as BPE's are)."""

    PIECES = {1: "he", 2: "llo", 3: " wor", 4: "ld", 5: "!"}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.PIECES[i] for i in ids)


@pytest.mark.parametrize("stops, kept, hit", [
    (["lo w"], [1], True),       # starts inside "llo": that token goes too ("he")
    (["llo"], [1], True),        # starts on a token boundary
    (["he"], [], True),          # at the very start: an empty answer
    (["!"], [1, 2, 3, 4], True),
    (["zz", "ld"], [1, 2, 3], True),  # the first of several
    (["xyz"], [1, 2, 3, 4, 5], False),
    ([], [1, 2, 3, 4, 5], False),
])
def test_cut_at_stop_returns_no_part_of_the_stop_sequence(stops, kept, hit):
    ids, found = cut_at_stop(Pieces(), [1, 2, 3, 4, 5], stops)
    assert (ids, found) == (kept, hit)
    text = Pieces().decode(ids)
    assert not any(s in text for s in stops)
    assert "hello world!".startswith(text)


def test_each_or_alone_keeps_a_failure_with_its_item():
    calls = []

    def fn(items):
        calls.append(list(items))
        if 3 in items:
            raise ValueError("three")
        return [x * 10 for x in items]

    assert each_or_alone(fn, [1, 2]) == [10, 20]
    out = each_or_alone(fn, [1, 3, 4])
    assert out[0] == 10 and out[2] == 40 and isinstance(out[1], ValueError)
    assert calls[-4:] == [[1, 3, 4], [1], [3], [4]]  # the group once, then one by one
    (alone,) = each_or_alone(fn, [3])  # a lone item's failure is returned, not raised
    assert isinstance(alone, ValueError) and calls[-1] == [3]


def test_a_step_failing_for_one_job_fails_that_job_only(tiny, monkeypatch):
    import isograd.serve.engine as engine_mod
    from isograd.serve.engine import Completion, Engine
    from isograd.serve.schema import Job

    model, tok = tiny
    real = engine_mod.token_trace

    def trace(model, tok, prompts, answers, **kw):
        if any("bad" in p for p in prompts):
            raise RuntimeError("trace failed")
        return real(model, tok, prompts, answers, **kw)

    monkeypatch.setattr(engine_mod, "token_trace", trace)

    def job(prompt: str, profile: bool) -> Job:
        return Job(prompt=prompt, prompt_ids=tuple(tok(prompt, add_special_tokens=False)
                                                   ["input_ids"]),
                   max_tokens=4, temperature=0.0, seed=0, stop=(), profile=profile)

    out = Engine(model, tok).run([job("a bad one", True), job("fine", True), job("also", False)])
    assert isinstance(out[0], RuntimeError)
    assert isinstance(out[1], Completion) and len(out[1].uncertainty["tokens"]) >= 1
    assert isinstance(out[2], Completion) and "tokens" not in out[2].uncertainty
