"""A real detector file (isograd.detect) behind the server: p_error and abstain equal
`lm.answer(..., detector=)` on the same question, through the JSON round trip."""

from __future__ import annotations

import numpy as np
import pytest

from isograd.detect import fit_detector, load_detector
from isograd.lm import answer, score
from isograd.lm.prompts import INSTRUCTION, qa_prompt
from isograd.serve import ServeOptions, create_app
from tests.serve.server import running

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def detector_file(tiny, tmp_path_factory):
    """A detector fitted on the tiny model's own score rows (labels made up), saved as JSON."""
    model, tok = tiny
    prompts = [qa_prompt(tok, f"Question number {i}?") for i in range(24)]
    s = score(model, tok, prompts, [f" answer {i % 7}" for i in range(24)], batch_size=8)
    rows = [s.row(k) for k in range(24)]
    median = np.median([r["log_p"] for r in rows])
    det = fit_detector(rows, np.array([r["log_p"] > median for r in rows]), alpha=0.45,
                       delta=0.2, model_id="tiny-llama")
    path = tmp_path_factory.mktemp("det") / "det.json"
    det.save(path)
    return path


def test_served_p_error_equals_answer_with_the_loaded_file(tiny, detector_file):
    model, tok = tiny
    det = load_detector(detector_file, model_id="tiny-llama")
    question = "What is the capital of France?"
    with running(create_app(model, tok, ServeOptions(model_name="tiny-llama"), detector=det)) as u:
        client = openai.OpenAI(base_url=u + "/v1", api_key="unused", max_retries=0)
        r = client.chat.completions.create(
            model="tiny-llama", temperature=0, max_tokens=16,
            messages=[{"role": "user", "content": f"{INSTRUCTION}\nQuestion: {question}"}])
    unc = r.choices[0].model_extra["uncertainty"]
    ref = answer(model, tok, [question], max_new_tokens=16, detector=det)[0]
    assert r.choices[0].message.content == ref.text
    assert unc["p_error"] == pytest.approx(ref.p_error, rel=1e-9)
    assert unc["abstain"] is ref.abstain
    with pytest.raises(ValueError, match="other-model"):  # the file names its model
        load_detector(detector_file, model_id="other-model")
