"""Every causal LM of the installed transformers, built tiny: ghost exact or refused, auto equal
to the loop engine (issue 22). Behind the `architectures` marker (about 196 models): run with
``make test-architectures`` (CI runs it after ``make test``)."""

from __future__ import annotations

import pytest
import torch

from tests.architectures.archs import all_model_types, check

pytestmark = pytest.mark.architectures

TYPES = all_model_types()


@pytest.mark.parametrize("model_type", TYPES)
def test_architecture_exact_or_refused(model_type: str) -> None:
    torch.set_num_threads(1)
    # right padding with B == T for every fourth architecture (a fixed sample)
    res = check(model_type, right_b_eq_t=TYPES.index(model_type) % 4 == 0)
    assert res.kind in ("exact", "fallback", "cannot-build", "non-finite"), \
        f"{res.kind}: {res.detail}"
    if res.kind in ("cannot-build", "non-finite"):
        # only the architectures listed so in the committed table, with their own reason
        assert _table().get(model_type) == res.kind, res.detail


def _table() -> dict[str, str]:
    from pathlib import Path

    rows = {}
    path = Path(__file__).resolve().parents[2] / "docs" / "architectures.md"
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1] in TYPES:
            rows[cells[1]] = cells[2]
    return rows
