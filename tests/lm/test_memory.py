"""Memory-aware batches: the budget's arithmetic, and the batch plan checked against brute
force (every pair once, no batch over the budget or the batch size, short pairs together)."""

from __future__ import annotations

import itertools
import random

import pytest

from isograd.lm import memory

from .tiny_lm import tiny_model


def test_units_and_budget_by_hand():
    model = tiny_model("llama")
    cfg = model.config
    units = cfg.num_hidden_layers * cfg.hidden_size + cfg.vocab_size
    assert memory.per_token_units(model) == units
    assert memory.bytes_per_token(model) == memory.BYTES_PER_TOKEN_UNIT * units
    per = memory.BYTES_PER_TOKEN_UNIT * units
    assert memory.token_budget(model, 10 * per + 1) == 10
    assert memory.token_budget(model, per / 2) == 1  # never zero: a pair then fails by name


def test_default_budget_is_half_the_available_memory(monkeypatch):
    model = tiny_model("llama")
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": 8e9)
    assert memory.token_budget(model) == int(4e9 / memory.bytes_per_token(model))
    assert 0 < memory.available_memory("cpu")


def padded(lengths, group):
    return len(group) * max(lengths[i] for i in group)


@pytest.mark.parametrize("seed", range(20))
def test_plan_covers_each_pair_once_within_budget(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([3, 5, 8, 40, 90]) for _ in range(rng.randint(1, 17))]
    batch, budget = rng.randint(1, 8), rng.choice([90, 120, 400])
    plan = memory.plan_batches(lengths, batch, budget, [f"p{i}" for i in range(len(lengths))])
    assert sorted(itertools.chain(*plan)) == list(range(len(lengths)))
    assert all(1 <= len(g) <= batch and padded(lengths, g) <= budget for g in plan)
    # batches that fit are the plain ones, in input order
    for start in range(0, len(lengths), batch):
        plain = list(range(start, min(start + batch, len(lengths))))
        if padded(lengths, plain) <= budget:
            assert plain in plan
    # a split batch never needs more passes than its pairs sorted and packed greedily
    # (brute force: the fewest passes over every ordering of a small batch)
    if len(lengths) <= 6 and batch >= len(lengths) and padded(lengths, range(len(lengths))) > budget:
        def passes(order):
            n, cur = 0, []
            for i in order:
                if cur and padded(lengths, cur + [i]) > budget:
                    n, cur = n + 1, []
                cur.append(i)
            return n + 1
        best = min(passes(p) for p in itertools.permutations(range(len(lengths))))
        assert len(plan) == best


def test_the_issues_case_short_pairs_together_the_long_one_alone():
    lengths = [30, 2458, 25, 40]  # four pairs, one with a 2,458-token prompt
    plan = memory.plan_batches(lengths, 8, 3000, ["a", "b", "c", "d"])
    assert plan == [[2, 0, 3], [1]]


def test_a_pair_too_large_alone_is_named_with_the_budget():
    with pytest.raises(ValueError, match=r"pair 'big' is 500 tokens.*\(300 tokens of 1 GB\)"):
        memory.plan_batches([10, 500], 8, 300, ["pair 'a'", "pair 'big'"], " of 1 GB")
