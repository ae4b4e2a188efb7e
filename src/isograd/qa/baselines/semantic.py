"""Semantic entropy (Kuhn, Gal & Farquhar 2023; Farquhar et al. 2024, Nature).

The K sampled answers are clustered into meanings, then the entropy is taken over meanings:

1. Clustering, greedy as in Farquhar et al.'s ``get_semantic_ids``: samples are visited in
   order; a sample joins the first existing cluster whose first member (its representative) it
   is equivalent to, else it opens a new cluster. Equivalence = bidirectional entailment, decided
   by an entailment back-end (`Entailment`). Two shortcuts that need no judge: answers equal
   after the graders' SQuAD-style normalisation (`normalize_answer`: NFKC, lower case, no
   punctuation, articles or extra spaces) are the same meaning; an empty answer only shares a meaning with other empty answers.
2. Entropy over clusters (`SEVariant`), in nats:
   - ``weighted`` (default; Kuhn et al.'s definition and Farquhar et al.'s main one): each
     sample's length-normalised probability exp(mean token log-prob), normalised over the K
     samples, summed per cluster: SE = −Σ_c p(c) log p(c);
   - ``discrete`` (Farquhar et al.'s "discrete semantic entropy"): p(c) = (cluster size) / K.

Entailment back-ends, all offline (`Entailment`):
- ``ngram`` (default): cosine of character 3-gram counts of the answers' *content* (normalised,
  without the words they share with the question, which echoing answers repeat) >= 0.5. Free,
  deterministic, needs no model; lexical, so it misses paraphrases with other words.
- ``llm``: the same LM asked, per direction, "does answer 1 entail answer 2?"; P(Yes) over
  {Yes, No} > 0.5 both ways (Farquhar et al.'s LLM-judge variant).
- ``embedding``: cosine of the LM's own mean-pooled hidden states of the answers (read after
  the question) >= 0.95.
- ``nli``: a user-supplied NLI classifier (HF id or local path, as Kuhn et al.'s DeBERTa-MNLI);
  entailment must be the argmax both ways.
Why ngram is the default: on SmolLM2-135M samples of 20 TriviaQA questions (measured with
``benchmarks/compare_baselines.py``; numbers in the README), the LLM judge almost never says Yes (P(Yes) > 0.5 in 0.4 % of its
queries, so it merges nothing beyond identical strings) while costing ~45 forward passes per
question, and the hidden-state cosines of a small LM are high for unrelated answers on the
same topic (over-merging); the n-gram back-end made few merges, mostly ones a reader would
make, at no cost. With a capable instruction model, ``entailment="llm"`` or ``"nli"`` is the faithful choice.

Cost (forward-pass equivalents): K samples + judge calls: ``llm`` and ``nli`` one per directed
pair judged (an NLI forward counts as one, whatever that model's size); ``embedding`` one per
distinct answer; ``ngram`` none.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..._choice import Choice
from ...lm.batching import encode_prompt, eval_mode, input_device
from ...lm.sampling import Sample
from ..similarity import normalize_answer
from ._lm import forward_batch, option_probs, render
from .base import BaselineResult, QAContext, get_samples, question_text


class Entailment(Choice):
    """How two answers are judged to mean the same."""

    LLM = "llm"
    """The same LM as judge: 'does answer 1 entail answer 2?', P(Yes) > threshold both ways."""
    EMBEDDING = "embedding"
    """Cosine of the LM's mean-pooled hidden states (answer in context) >= threshold."""
    NGRAM = "ngram"
    """Cosine of character 3-gram counts of the answers without the question's words (default)."""
    NLI = "nli"
    """A user-supplied NLI model (HF id or path): entailment is the argmax both ways."""

    @classmethod
    def noun(cls) -> str:
        return "entailment back-end"


class SEVariant(Choice):
    """How the probability of a meaning is formed."""

    WEIGHTED = "weighted"
    """Sum of the cluster's normalised length-normalised sample probabilities (Kuhn et al.)."""
    DISCRETE = "discrete"
    """Fraction of the K samples in the cluster (Farquhar et al.'s discrete SE)."""

    @classmethod
    def noun(cls) -> str:
        return "semantic entropy variant"


DEFAULT_THRESHOLDS = {Entailment.LLM: 0.5, Entailment.EMBEDDING: 0.95, Entailment.NGRAM: 0.5,
                      Entailment.NLI: 0.0}

# --- entropies ---------------------------------------------------------------------------

def cluster_entropy(ids: Sequence[int], log_weights: Sequence[float] | None = None) -> float:
    """Entropy (nats) of the distribution over clusters.

    Args:
        ids: cluster id per sample [K].
        log_weights: per-sample log weights [K] (e.g. length-normalised log-probabilities),
            normalised over the samples; None gives each sample weight 1/K (discrete SE).
    """
    if len(ids) == 0:
        raise ValueError("no samples")
    if log_weights is None:
        log_weights = [0.0] * len(ids)
    lw = torch.as_tensor(list(log_weights), dtype=torch.float64, device="cpu")
    lw = lw - torch.logsumexp(lw, 0)
    idx = torch.as_tensor(list(ids), device="cpu")
    mass = [torch.logsumexp(lw[idx == c], 0) for c in sorted(set(ids))]
    logp = torch.stack(mass)
    h = float(-(logp.exp() * logp).sum())
    return h if h > 0 else 0.0  # one cluster: -0.0 or a rounding negative


# --- judges -------------------------------------------------------------------------------

class _Judge:
    """Decides whether text ``i`` means the same as each of texts ``reps`` (indices)."""

    cost: float = 0.0

    def same(self, i: int, reps: Sequence[int]) -> list[bool]:
        raise NotImplementedError


class _SimilarityJudge(_Judge):
    def __init__(self, vectors: torch.Tensor, threshold: float, cost: float) -> None:
        self.unit = torch.nn.functional.normalize(vectors.double(), dim=-1)
        self.threshold, self.cost = threshold, cost

    def same(self, i: int, reps: Sequence[int]) -> list[bool]:
        return [float(self.unit[i] @ self.unit[r]) >= self.threshold for r in reps]


def content(text: str, question: str = "") -> str:
    """The normalised answer without the words it shares with the question.

    Answers often echo the question ("In 1918, women over 30 ..."): those words carry no
    meaning of their own and would make every echoing answer look alike. When nothing is
    left, the whole normalised answer is kept.
    """
    words = normalize_answer(text).split()
    echo = set(normalize_answer(question).split())
    kept = [w for w in words if w not in echo]
    return " ".join(kept or words)


def ngram_vectors(texts: Sequence[str], n: int = 3, question: str = "") -> torch.Tensor:
    """Character n-gram count vectors [N, G] of the answers' `content` (space-padded)."""
    grams = [Counter(p[j:j + n] for j in range(max(1, len(p) - n + 1)))
             for p in (f" {content(t, question)} " for t in texts)]
    vocab = {g: j for j, g in enumerate(sorted(set().union(*grams)))}
    out = torch.zeros(len(texts), max(1, len(vocab)), dtype=torch.float64, device="cpu")
    for i, c in enumerate(grams):
        for g, v in c.items():
            out[i, vocab[g]] = v
    return out


@torch.no_grad()
def embed_answers(model: Any, tokenizer: Any, question: str, texts: Sequence[str],
                  *, layer: int | None = None) -> torch.Tensor:
    """Mean-pooled hidden states [N, d] of each answer read after its question.

    The LM reads ``"Question: {question}\\nAnswer: {text}"``; the states of the answer's tokens
    at ``layer`` (default: the middle layer) are averaged. Pooling over the answer only keeps
    the first position (an attention sink with a huge norm in many LMs) out of the mean.
    """
    head = f"Question: {question.strip()}\nAnswer:"
    head_ids = encode_prompt(tokenizer, head)
    seqs, starts = [], []
    for t in texts:
        ids = encode_prompt(tokenizer, f"{head} {t.strip()}")
        k = len(head_ids) if ids[:len(head_ids)] == head_ids and len(ids) > len(head_ids) else 1
        seqs.append(ids)
        starts.append(k)
    with eval_mode(model):
        _, mask, hs = forward_batch(model, seqs, keep=1, hidden=True)
    assert hs is not None
    h = hs[len(hs) // 2 if layer is None else layer].double()
    t = mask.shape[1]
    out = []
    for i, (s, k) in enumerate(zip(seqs, starts)):
        lo = t - len(s) + k  # first answer position in the left-padded row
        out.append(h[i, lo:].mean(0))
    return torch.stack(out).cpu()


class _LLMJudge(_Judge):
    def __init__(self, model: Any, tokenizer: Any, question: str, texts: Sequence[str],
                 threshold: float) -> None:
        self.m, self.t, self.q, self.texts, self.threshold = model, tokenizer, question, texts, threshold
        self.p_yes: list[float] = []  # every P(Yes) computed, for diagnostics

    def prompt(self, a: str, b: str) -> str:
        user = (f"We are evaluating answers to the question: {self.q.strip()}\n"
                f"Answer 1: {a.strip()}\nAnswer 2: {b.strip()}\n"
                "Does Answer 1 entail Answer 2, that is, if Answer 1 is correct, must "
                "Answer 2 also be correct? Reply Yes or No.")
        return render(self.t, user, "Reply:")

    def same(self, i: int, reps: Sequence[int]) -> list[bool]:
        # representative => new first; the reverse only where that held (usually few)
        fwd = self._yes([(self.texts[r], self.texts[i]) for r in reps])
        back_reps = [r for r, ok in zip(reps, fwd) if ok]
        back = dict(zip(back_reps, self._yes([(self.texts[i], self.texts[r]) for r in back_reps])))
        return [bool(back.get(r, False)) for r in reps]

    def _yes(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        if not pairs:
            return []
        p_yes = option_probs(self.m, self.t, [self.prompt(a, b) for a, b in pairs],
                             (" Yes", " No"))[:, 0]
        self.cost += len(pairs)
        self.p_yes += p_yes.tolist()
        return [bool(p > self.threshold) for p in p_yes]


_NLI_CACHE: dict[str, tuple[Any, Any]] = {}


def load_nli(name_or_path: str, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) of an NLI sequence classifier, loaded once per process."""
    if name_or_path not in _NLI_CACHE:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForSequenceClassification.from_pretrained(name_or_path)
        _NLI_CACHE[name_or_path] = (model.to(device).eval(), tok)
    return _NLI_CACHE[name_or_path]


def entailment_index(nli_model: Any) -> int:
    """Index of the entailment class in an NLI model's ``config.id2label``."""
    labels = {int(k): str(v) for k, v in nli_model.config.id2label.items()}
    hits = [k for k, v in labels.items() if "entail" in v.lower() and "not" not in v.lower()]
    if len(hits) != 1:
        raise ValueError(f"cannot find the entailment label among {labels}; "
                         "the NLI model needs one label containing 'entail'")
    return hits[0]


class _NLIJudge(_Judge):
    def __init__(self, nli: tuple[Any, Any], question: str, texts: Sequence[str]) -> None:
        self.m, self.t = nli
        self.ent = entailment_index(self.m)
        # question + answer on both sides (Kuhn et al.)
        self.texts = [f"{question.strip()} {t.strip()}" for t in texts]

    @torch.no_grad()
    def same(self, i: int, reps: Sequence[int]) -> list[bool]:
        prem = [self.texts[x] for r in reps for x in (r, i)]
        hyp = [self.texts[x] for r in reps for x in (i, r)]
        device = input_device(self.m)
        # lists, then tensors made on the classifier's device (not on torch's default device)
        enc = self.t(prem, hyp, padding=True, truncation=True)
        enc = {k: torch.tensor(v, device=device) for k, v in enc.items()}
        with eval_mode(self.m):
            pred = self.m(**enc).logits.argmax(-1).tolist()
        self.cost += len(prem)
        return [pred[2 * j] == self.ent and pred[2 * j + 1] == self.ent for j in range(len(reps))]


# --- clustering ---------------------------------------------------------------------------

def semantic_ids(texts: Sequence[str], judge: _Judge | None) -> list[int]:
    """Greedy clustering of answers into meanings (module docstring); cluster id per text.

    ``judge`` works on the indices of the distinct normalised texts, in first-seen order
    (``unique_texts(texts)``); None clusters by normalised string equality only.
    """
    keys = [normalize_answer(t) for t in texts]
    uniq = list(dict.fromkeys(keys))
    cluster_of: dict[str, int] = {}
    reps: list[int] = []  # per cluster: index (into uniq) of its representative
    for u, key in enumerate(uniq):
        cid = None
        candidates = [c for c, r in enumerate(reps) if uniq[r]]
        if key and candidates and judge is not None:
            same = judge.same(u, [reps[c] for c in candidates])
            cid = next((c for c, s in zip(candidates, same) if s), None)
        if cid is None:
            cid = len(reps)
            reps.append(u)
        cluster_of[key] = cid
    return [cluster_of[k] for k in keys]


def unique_texts(texts: Sequence[str]) -> list[str]:
    """One original text per distinct normalised text, in first-seen order."""
    first: dict[str, str] = {}
    for t in texts:
        first.setdefault(normalize_answer(t), t)
    return list(first.values())


def make_judge(backend: Entailment, model: Any, tokenizer: Any, question: str,
               texts: Sequence[str], *, threshold: float, nli: Any = None,
               layer: int | None = None) -> _Judge:
    """The judge of one question's distinct answers ``texts`` (see `Entailment`)."""
    if backend is Entailment.LLM:
        return _LLMJudge(model, tokenizer, question, texts, threshold)
    if backend is Entailment.NGRAM:
        return _SimilarityJudge(ngram_vectors(texts, question=question), threshold, 0.0)
    if backend is Entailment.EMBEDDING:
        nonempty = [t if t.strip() else "-" for t in texts]
        return _SimilarityJudge(embed_answers(model, tokenizer, question, nonempty, layer=layer),
                                threshold, float(len(texts)))
    if nli is None:
        raise ValueError("entailment='nli' needs nli=<HF id or local path> "
                         "(or a (model, tokenizer) pair)")
    pair = load_nli(nli) if isinstance(nli, str) else tuple(nli)
    return _NLIJudge(pair, question, texts)


@dataclass(frozen=True)
class SemanticEntropy:
    """Semantic entropy of K samples (module docstring).

    Attributes:
        entailment: back-end, an `Entailment` value (default "ngram", see the module docstring).
        variant: an `SEVariant` value (default "weighted").
        threshold: the back-end's decision threshold (None: `DEFAULT_THRESHOLDS`).
        nli: for entailment="nli", an HF id / local path, or a (model, tokenizer) pair.
        layer: for entailment="embedding", the hidden-state layer (None: the middle one).
        k, temperature, max_new_tokens, seed: sampling options when ``ctx.samples`` is None.
    """

    entailment: str = Entailment.NGRAM.value
    variant: str = SEVariant.WEIGHTED.value
    threshold: float | None = None
    nli: Any = field(default=None, compare=False)
    layer: int | None = None
    k: int = 10
    temperature: float = 1.0
    max_new_tokens: int = 32
    seed: int = 0

    name: ClassVar[str] = "semantic_entropy"
    label: ClassVar[str] = "semantic entropy"
    needs_samples: ClassVar[bool] = True
    higher_is_uncertain: ClassVar[bool] = True

    def __post_init__(self) -> None:
        Entailment.parse(self.entailment)
        SEVariant.parse(self.variant)

    def clusters(self, model: Any, tokenizer: Any, question: str,
                 samples: Sequence[Sample]) -> tuple[list[int], float]:
        """Cluster id per sample and the judge's cost in forward-pass equivalents."""
        backend = Entailment.parse(self.entailment)
        texts = [s.text for s in samples]
        uniq = unique_texts(texts)
        if len(uniq) < 2:
            return [0] * len(texts), 0.0
        thr = DEFAULT_THRESHOLDS[backend] if self.threshold is None else self.threshold
        judge = make_judge(backend, model, tokenizer, question, uniq, threshold=thr,
                           nli=self.nli, layer=self.layer)
        return semantic_ids(texts, judge), judge.cost

    def __call__(self, model: Any, tokenizer: Any, ctx: QAContext) -> BaselineResult:
        samples, cost = get_samples(model, tokenizer, ctx, k=self.k, temperature=self.temperature,
                                    max_new_tokens=self.max_new_tokens, seed=self.seed)
        ids, judge_cost = self.clusters(model, tokenizer, question_text(ctx.question), samples)
        weights = None
        if SEVariant.parse(self.variant) is SEVariant.WEIGHTED:
            weights = [s.mean_logprob for s in samples]
        value = cluster_entropy(ids, weights)
        if not math.isfinite(value):
            raise FloatingPointError("non-finite semantic entropy")
        return BaselineResult(value=value, forward_passes=cost + judge_cost)
