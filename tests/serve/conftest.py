"""Fixtures of the serve tests: the tiny float64 Llama and a server factory."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the serve tests need the serve extra: pip install "
                    "'isograd[serve]'")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): a tiny float64 Llama and its chat tokenizer (one torch thread)."""
    import torch

    from tests.lm.tiny_lm import tiny_model, tiny_tokenizer

    torch.set_num_threads(1)
    return tiny_model("llama"), tiny_tokenizer()


class FakeDetector:
    """The detector interface (`predict(rows) -> .p_error, .abstain`), recording its rows."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def predict(self, rows):
        import numpy as np

        self.rows += rows
        p_error = np.array([1.0 - r["p"] for r in rows])

        class Out:
            pass

        out = Out()
        out.p_error, out.abstain = p_error, p_error > 0.5
        return out
