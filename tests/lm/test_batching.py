"""lm.batching: padding, position ids, answer masks and the logits_to_keep paths."""

from __future__ import annotations

import pytest
import torch

from isograd.lm.batching import (
    accepts,
    cache_arg,
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
