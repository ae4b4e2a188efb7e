"""lm.batching: padding, position ids, answer masks and the logits_to_keep paths."""

from __future__ import annotations

import pytest
import torch

from isograd.lm.batching import (
    accepts,
    batchable,
    cache_arg,
    forward_inputs,
    input_device,
    logits_at,
    logits_to_keep_arg,
    pad,
    pair_batch,
)

from .tiny_lm import tiny_model


def test_pad_both_sides():
    seqs = [[5, 6, 7], [8]]
    r = pad(seqs, 0, side="right")
    assert r["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert r["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert r["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    left = pad(seqs, 0, side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert left["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert all(v.dtype == torch.long for v in left.values())
    with pytest.raises(ValueError, match="side"):
        pad(seqs, 0, side="middle")
    with pytest.raises(ValueError, match="empty"):
        pad([[1], []], 0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_pair_batch_marks_answer_tokens(side):
    pairs = [([1, 2], [3]), ([4], [5, 6, 7])]
    b = pair_batch(pairs, 0, side=side)
    for i, (p, a) in enumerate(pairs):
        assert b["input_ids"][i][b["answer_mask"][i]].tolist() == a
        real = b["input_ids"][i][b["attention_mask"][i].bool()].tolist()
        assert real == p + a


class _NoKeep(torch.nn.Module):
    """Wraps a model but hides logits_to_keep: logits_at must slice."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids)


def test_logits_at_every_path_gives_the_same_logits():
    model = tiny_model("llama")
    ids = torch.randint(3, 40, (2, 7))
    full = model(input_ids=ids).logits
    assert logits_to_keep_arg(model) == "logits_to_keep" and cache_arg(model) == "cache"
    trailing, _ = logits_at(model, 3, 7, input_ids=ids)  # int path
    inner, _ = logits_at(model, 2, 5, input_ids=ids)  # index-tensor path
    plain = _NoKeep(model)
    assert logits_to_keep_arg(plain) is None and accepts(plain, "position_ids")
    sliced, _ = logits_at(plain, 2, 5, input_ids=ids)
    torch.testing.assert_close(trailing, full[:, 3:7])
    torch.testing.assert_close(inner, full[:, 2:5])
    torch.testing.assert_close(sliced, full[:, 2:5])
    assert input_device(model) == input_device(plain) == torch.device("cpu")


class _NoPositions(torch.nn.Module):
    """Wraps a model but its forward takes no position_ids (as some custom models)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, cache=None, use_cache=None,
                logits_to_keep=0, output_hidden_states=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                          use_cache=use_cache, logits_to_keep=logits_to_keep,
                          output_hidden_states=output_hidden_states)


def test_forward_inputs_pass_position_ids_only_where_taken():
    model = tiny_model("llama")
    bare = _NoPositions(model)
    left = pad([[5, 6, 7], [8]], 0, side="left")
    assert set(forward_inputs(model, left)) == {"input_ids", "attention_mask", "position_ids"}
    assert forward_inputs(model, left)["position_ids"] is left["position_ids"]
    with pytest.raises(ValueError, match="_NoPositions.forward takes no position_ids.*pad on the right"):
        forward_inputs(bare, left)
    right = pad([[5, 6, 7], [8]], 0, side="right")  # real tokens at their own columns: fine
    assert set(forward_inputs(bare, right)) == {"input_ids", "attention_mask"}
    assert set(forward_inputs(bare, pad([[5, 6], [7, 8]], 0, side="left"))) == {
        "input_ids", "attention_mask"}
    assert batchable(model, [[1, 2], [3]]) and batchable(bare, [[1, 2], [3, 4]])
    assert not batchable(bare, [[1, 2], [3]])


def test_every_caller_works_with_a_model_without_position_ids():
    """Answers, scores, option scores and baseline forwards of the wrapper equal the inner
    model's (which gets position ids), on prompts of different lengths."""
    from isograd.lm import greedy_answers, qa_prompt, score, score_choices
    from isograd.qa.baselines._lm import forward_batch

    from .tiny_lm import tiny_tokenizer

    tok = tiny_tokenizer(chat=False)
    model = tiny_model("llama", seed=2)
    bare = _NoPositions(model)
    prompts = [qa_prompt(tok, q) for q in ("Who?", "What is the capital city of France?")]
    want = greedy_answers(model, tok, prompts, max_new_tokens=4, batch_size=2)
    got = greedy_answers(bare, tok, prompts, max_new_tokens=4, batch_size=2)  # one by one
    assert [a.token_ids for a in got] == [a.token_ids for a in want]
    answers = ["Paris", "a b"]
    ref = score(model, tok, prompts, answers, method="loop")
    out = score(bare, tok, prompts, answers, method="loop")  # right padding: exact
    torch.testing.assert_close(out.p, ref.p)
    torch.testing.assert_close(out.epistemic, ref.epistemic)
    with pytest.raises(ValueError, match="takes no position_ids"):
        score(bare, tok, prompts, answers, method="loop", padding_side="left")
    with pytest.warns(UserWarning, match="4-D attention mask"):  # packed needs position ids
        ch = score_choices(bare, tok, prompts[:1], [["Paris", "Rome"]], method="loop")
    ch_ref = score_choices(model, tok, prompts[:1], [["Paris", "Rome"]], method="loop")
    torch.testing.assert_close(ch.p, ch_ref.p)
    seqs = [[5, 6, 7, 8], [9]]
    torch.testing.assert_close(forward_batch(bare, seqs, keep=1)[0],
                               forward_batch(model, seqs, keep=1)[0])
