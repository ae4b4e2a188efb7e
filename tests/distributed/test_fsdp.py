"""FSDP2-sharded models (2 ranks, gloo): ghost norms and lm.score equal the unsharded model's."""

from __future__ import annotations

import json

import pytest

from .launch import run, torchrun_cmd

KINDS = ["llama", "llama-tied", "gpt2-tied"]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("fsdp")
    proc = run(torchrun_cmd(nproc=2) + ["tests/distributed/fsdp_worker.py", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [g["rank"] for g in got] == [0, 1] and all(g["world"] == 2 for g in got)
    return got


@pytest.mark.parametrize("kind", KINDS)
def test_sharded_ghost_norms_equal_unsharded(ranks, kind):
    for r in ranks:
        e = r["norms"][kind]
        assert e["sharded"] and e["n"] == 3
        for method in ("ghost", "auto"):
            assert e[method] <= 1e-8, (r["rank"], method, e[method])
            assert e[f"{method}_by_param"] <= 1e-8


@pytest.mark.parametrize("kind", KINDS)
def test_sharded_model_left_as_found(ranks, kind):
    for r in ranks:
        assert r["norms"][kind]["still_sharded"] and r["norms"][kind]["grads_none"]


@pytest.mark.parametrize("kind", KINDS)
def test_sharded_lm_score_equals_unsharded(ranks, kind):
    for r in ranks:
        got = r["score"][kind]
        assert got["p"] <= 1e-12
        # the layer-scaled term reads every weight: FSDP2 shards are summed across ranks
        assert got["epistemic"] <= 1e-8 and got["epistemic_layer_scaled"] <= 1e-8
        assert got.get("embedding_grad", 0.0) <= 1e-8


def test_loop_refused_naming_the_exact_way(ranks):
    for r in ranks:
        for kind in KINDS:
            msg = r["norms"][kind]["loop_error"]
            assert msg is not None and "FSDP2" in msg
            assert "method='ghost' or 'auto'" in msg


def test_use_outside_owner_still_refused_when_sharded(ranks):
    # the use check sees the unsharded tensors FSDP2 swaps in for the forward
    for r in ranks:
        assert r["outside_error"] is not None and "'lm_head.weight'" in r["outside_error"]
