"""One call from questions to answers with their uncertainty: `answer`.

``answer(model, tokenizer, questions)`` puts each question to the model in a QA prompt
(`qa_prompt`), decodes the greedy one-line answers in batches (`greedy_answers`, left padding,
each answer the one `greedy_answer` gives alone; the decoding rules of `isograd.lm.sampling`), and scores exactly the generated token ids with `score`: p,
epistemic σ²·‖∇θ p‖², aleatoric p(1−p) and total, as ``isograd qa`` does for each question.

An answer that stops at once (the model's first token is a stop token) has no tokens; it is
scored on the stop token itself (`scored_token_ids`), so every question gets a number.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..layer_scale import Covariance, LayerScale
from ..norms.api import Method
from .generate import greedy_answers
from .prompts import PromptStyle, encode_prompt, qa_prompt
from .score import Prediction, score
from .trace import TokenTrace

if TYPE_CHECKING:
    from ..detect import Detector


@dataclass(frozen=True)
class AnswerRow:
    """One question's greedy answer and its uncertainty.

    Attributes:
        question: the question as given.
        prompt: the prompt text the model saw (`qa_prompt`).
        text: the decoded answer, stripped ("" when the model stopped at once).
        token_ids: the generated answer tokens (stop token excluded), length L >= 0.
        scored_token_ids: the tokens that were scored: `token_ids`, or the stop token alone
            when the answer is empty.
        empty: True when the answer has no tokens.
        p: the prediction (see `Prediction`) of `scored_token_ids` given the prompt.
        log_p: log p.
        epistemic: the epistemic term under the chosen covariance: σ²·‖∇θ p‖² (isotropic,
            default) or the layer-scaled σ²·Σ_l s_l‖∇_l p‖².
        epistemic_isotropic: σ²·‖∇θ p‖².
        epistemic_layer_scaled: σ²·Σ_l s_l‖∇_l p‖² (`isograd.layer_scale`).
        aleatoric: p(1−p).
        total: epistemic + aleatoric.
        grad_log_p: ‖∇θ log p‖² (no p², no σ²).
        epistemic_last_layers: σ²·‖∇p‖² over the last transformer blocks' parameters only
            (None when no block is recognised; see `LMScores`).
        embedding_grad: ‖∂ log p/∂e‖² over the input embeddings (None when not reached).
        token_logprobs: log-probabilities of `scored_token_ids` from the scoring pass.
        trace: with ``answer(..., trace=True)``, the per-token profile (`TokenTrace`: p_t,
            σ²‖∇p_t‖², p_t(1−p_t) for each scored token), else None.
        p_error: with ``answer(..., detector=...)``, the detector's probability that the
            answer is wrong, else None.
        abstain: with a detector, True where it declines to answer (P(wrong) above its
            certified threshold, or no threshold certified), else None.
    """

    question: str
    prompt: str
    text: str
    token_ids: tuple[int, ...]
    scored_token_ids: tuple[int, ...]
    empty: bool
    p: float
    log_p: float
    epistemic: float
    epistemic_isotropic: float
    epistemic_layer_scaled: float
    aleatoric: float
    total: float
    grad_log_p: float
    epistemic_last_layers: float | None
    embedding_grad: float | None
    token_logprobs: tuple[float, ...]
    trace: TokenTrace | None = None
    p_error: float | None = None
    abstain: bool | None = None


@dataclass(frozen=True)
class Answers(Sequence[AnswerRow]):
    """The rows of `answer`, in question order; indexable and iterable like a tuple.

    Attributes:
        rows: one `AnswerRow` per question.
        prediction: the `Prediction` value used for p.
        sigma2: the parameter variance σ².
        covariance: the `isograd.Covariance` value behind `AnswerRow.epistemic`.
        prompt_style: the `PromptStyle` value used.
    """

    rows: tuple[AnswerRow, ...]
    prediction: str
    sigma2: float
    covariance: str
    prompt_style: str

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):  # type: ignore[override]
        return self.rows[i]

    def __iter__(self) -> Iterator[AnswerRow]:
        return iter(self.rows)

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per row (tuples and tensors become lists; a trace becomes a dict of
        lists): ready for JSON or a DataFrame."""
        return [{k: _plain(v) for k, v in asdict(r).items()} for r in self.rows]

    def to_pandas(self) -> Any:
        """The records as a ``pandas.DataFrame`` (needs pandas, imported here only)."""
        try:
            import pandas as pd
        except ImportError as e:  # pandas is no dependency of isograd
            raise ImportError("to_pandas() needs pandas: pip install pandas, "
                              "or use to_records()") from e
        return pd.DataFrame.from_records(self.to_records())


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _opt(t: torch.Tensor | None, k: int) -> float | None:
    return None if t is None else float(t[k])


def scored_token_ids(model: Any, tokenizer: Any, prompt: str,
                     token_ids: Sequence[int]) -> list[int]:
    """The token ids to score for a generated answer: the answer's own tokens, or, when the
    answer is empty, the stop token the model chose (its greedy first token).

    Args:
        model: the causal LM that generated the answer.
        tokenizer: its tokenizer.
        prompt: the prompt text (tokenized without added special tokens).
        token_ids: the generated answer's tokens (stop token excluded).

    Returns:
        A non-empty list of token ids.
    """
    if len(token_ids):
        return [int(t) for t in token_ids]
    device = next(model.parameters()).device
    ids = torch.tensor([encode_prompt(tokenizer, prompt)], device=device)
    with torch.no_grad():
        return [int(model(input_ids=ids).logits[0, -1].argmax())]


def answer(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str] | str,
    *,
    prompt: str | PromptStyle = PromptStyle.SHORT,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    prediction: str | Prediction = Prediction.GEOMETRIC,
    sigma2: float = 1.0,
    method: str | Method = Method.AUTO,
    covariance: str | Covariance = Covariance.ISOTROPIC,
    layer_scale: str | LayerScale = LayerScale.WEIGHT_VARIANCE,
    trace: bool = False,
    detector: Detector | None = None,
) -> Answers:
    """Answer each question greedily and say how uncertain each answer is.

    Args:
        model: a causal LM (Hugging Face ``...ForCausalLM``), e.g. from `load_model`.
        tokenizer: its tokenizer.
        questions: Q question texts (or one string).
        prompt: prompt style, "short" (default) | "plain" | "fewshot" | "base" (`PromptStyle`).
        max_new_tokens: cap on answer tokens.
        batch_size: questions per generation batch and per scoring pass.
        prediction: what p is, "geometric" (default) | "sequence" | "first_token".
        sigma2: isotropic parameter variance σ² (scales epistemic only; no ranking changes).
        method: norm engine, "auto" | "loop" | "ghost" (`isograd.Method`).
        covariance: which epistemic term is `AnswerRow.epistemic` (and in total):
            "isotropic" (default, the paper's σ²I) or "layer-scaled" (see `lm.score`).
        layer_scale: the data-free rule of the layer-scaled covariance (see `lm.score`).
        trace: also the per-token profile of each answer (`AnswerRow.trace`; one more batched
            pass over the answers' prefixes, about T times the scoring work).
        detector: an `isograd.detect.Detector` (e.g. from `isograd.detect.load_detector`):
            adds its `AnswerRow.p_error` and `AnswerRow.abstain` to every row, read from the
            same scoring pass (nothing is recomputed).

    Returns:
        `Answers`: Q `AnswerRow`s in question order, with `to_records()` / `to_pandas()`.

    Raises:
        ValueError: no questions, an empty question, or a bad option (the message names it
            and the allowed values).
    """
    if isinstance(questions, str):
        questions = [questions]
    questions = list(questions)
    if not questions:
        raise ValueError("answer() needs at least one question")
    for i, q in enumerate(questions):
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"questions[{i}] must be a non-empty string, got {q!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    style = PromptStyle.parse(prompt)
    pred = Prediction.parse(prediction)
    prompts = [qa_prompt(tokenizer, q, style) for q in questions]
    gens = greedy_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                          batch_size=batch_size)
    ids = [scored_token_ids(model, tokenizer, p, g.token_ids) for p, g in zip(prompts, gens)]
    s = score(model, tokenizer, prompts, ids, prediction=pred, batch_size=batch_size,
              sigma2=sigma2, method=method, covariance=covariance, layer_scale=layer_scale,
              trace=trace)
    judged = None if detector is None else detector.predict([s.row(k) for k in range(len(prompts))])
    rows = tuple(
        AnswerRow(question=q, prompt=p, text=g.text, token_ids=tuple(g.token_ids),
                  scored_token_ids=tuple(i), empty=not g.token_ids, p=float(s.p[k]),
                  log_p=float(s.log_p[k]), epistemic=float(s.epistemic[k]),
                  epistemic_isotropic=float(s.epistemic_isotropic[k]),
                  epistemic_layer_scaled=float(s.epistemic_layer_scaled[k]),
                  aleatoric=float(s.aleatoric[k]), total=float(s.total[k]),
                  grad_log_p=float(s.grad_log_p[k]),
                  epistemic_last_layers=_opt(s.epistemic_last_layers, k),
                  embedding_grad=_opt(s.embedding_grad, k), token_logprobs=s.token_logprobs[k],
                  trace=s.trace[k] if s.trace is not None else None,
                  p_error=None if judged is None else float(judged.p_error[k]),
                  abstain=None if judged is None else bool(judged.abstain[k]))
        for k, (q, p, g, i) in enumerate(zip(questions, prompts, gens, ids))
    )
    return Answers(rows=rows, prediction=pred.value, sigma2=float(sigma2),
                   covariance=s.covariance, prompt_style=style.value)
