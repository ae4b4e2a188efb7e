"""One batch of requests through the model: one generation batch, one score pass (sync, torch).

`Engine.run(jobs)` answers a group of `Job`s together:

* the jobs decode as one left-padded batch (`isograd.lm.sampling.decode` with per-row
  temperatures and seeds): each row gets the answer it gets alone (a sampled row draws from
  its own seeded generator), never one that depends on what it was batched with;
* each answer is cut to its job's ``max_tokens`` and before its first stop sequence
  (`cut_at_stop`); an empty answer is scored on its stop token (`isograd.lm.scored_token_ids`, as
  `isograd.lm.answer` does);
* one `isograd.lm.score` pass scores every answer's exact tokens; the jobs that ask for the
  per-token profile share one `isograd.lm.token_trace` call; a loaded detector sees the rows.

A step that raises for the group is redone job by job, so an error (or a non-finite score)
fails its own job only: `run` returns a `Completion` or the exception, per job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..lm import score, scored_token_ids, token_trace
from ..lm.sampling import Sample, decode
from .schema import Job, ServeOptions

UNCERTAINTY_FIELDS = ("p", "log_p", "epistemic", "aleatoric", "total", "grad_log_p")


@dataclass(frozen=True)
class Completion:
    """One job's answer.

    Attributes:
        text: the decoded answer tokens, stripped.
        token_ids: the answer's tokens (those the uncertainty is of).
        finish_reason: "length" (``max_tokens`` reached) or "stop".
        uncertainty: the `uncertainty` object of the response, None when the server serves
            plain generation.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str
    uncertainty: dict[str, Any] | None


def each_or_alone(fn: Callable[[list[Any]], list[Any]], items: list[Any]) -> list[Any]:
    """``fn(items)``; if it raises, ``fn([item])[0]`` for each item, the exception standing in
    for the result of an item that fails alone (never raised: the other items go on)."""
    if not items:
        return []
    try:
        out = fn(items)
        if len(out) != len(items):
            raise RuntimeError(f"{len(out)} results for {len(items)} requests")
        return out
    except Exception as e:  # noqa: BLE001 - find which item fails: it fails alone
        if len(items) == 1:
            return [e]
    res: list[Any] = []
    for it in items:
        try:
            res.append(fn([it])[0])
        except Exception as e:  # noqa: BLE001 - one request's failure, reported to it
            res.append(e)
    return res


def cut_at_stop(tokenizer: Any, ids: Sequence[int], stops: Sequence[str]) -> tuple[list[int], bool]:
    """The answer tokens before the first stop sequence, and whether one was found.

    The tokens kept are the longest prefix whose text ends before the stop sequence starts,
    so the text returned holds no part of it (a token the stop sequence starts inside is
    dropped with it).
    """
    ids = list(ids)
    if not stops:
        return ids, False
    for k in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:k], skip_special_tokens=True)
        starts = [text.find(s) for s in stops if s in text]
        if starts:
            j = k - 1
            while j > 0 and len(tokenizer.decode(ids[:j], skip_special_tokens=True)) > min(starts):
                j -= 1
            return ids[:j], True
    return ids, False


class Engine:
    """Answers groups of jobs with one model (used from one thread at a time).

    Args:
        model, tokenizer: the causal LM (`isograd.lm.load_model`).
        uncertainty: False skips the score pass (plain generation).
        prediction, sigma2: as `isograd.lm.score` (None: `ServeOptions`' defaults, the server's).
        detector: an object with ``predict(rows) -> out`` (``out.p_error``, ``out.abstain``
            arrays), rows being `isograd.lm.score`'s per-row scalars; None for no detector.
    """

    def __init__(self, model: Any, tokenizer: Any, *, uncertainty: bool = True,
                 prediction: str | None = None, sigma2: float | None = None,
                 detector: Any = None) -> None:
        self.model, self.tokenizer, self.uncertainty = model, tokenizer, uncertainty
        self.prediction = ServeOptions.prediction if prediction is None else prediction
        self.sigma2 = ServeOptions.sigma2 if sigma2 is None else sigma2
        self.detector = detector

    def run(self, jobs: Sequence[Job]) -> list[Completion | Exception]:
        """Answer `jobs` together (see the module docstring); one result per job, in order."""
        jobs = list(jobs)
        gens = self._generate(jobs)
        ok = [i for i, g in enumerate(gens) if not isinstance(g, Exception)]
        cut: dict[int, tuple[list[int], str]] = {}
        for i in ok:
            ids, reason = list(gens[i].token_ids)[:jobs[i].max_tokens], "stop"
            if len(ids) >= jobs[i].max_tokens:
                reason = "length"
            ids, hit = cut_at_stop(self.tokenizer, ids, jobs[i].stop)
            cut[i] = (ids, "stop" if hit else reason)
        unc: dict[int, Any] = {i: None for i in ok}
        if self.uncertainty and ok:
            unc = dict(zip(ok, self._uncertainty([(jobs[i], cut[i][0]) for i in ok])))
        out: list[Completion | Exception] = []
        for i, g in enumerate(gens):
            u = unc.get(i)
            if isinstance(g, Exception) or isinstance(u, Exception):
                out.append(g if isinstance(g, Exception) else u)
                continue
            ids, reason = cut[i]
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip() if ids else ""
            out.append(Completion(text=text, token_ids=tuple(ids), finish_reason=reason,
                                  uncertainty=u))
        return out

    # ------------------------------------------------------------------ generation

    def _generate(self, jobs: list[Job]) -> list[Sample | Exception]:
        """One decode batch for the group; each row with its own temperature and seed draws
        what it draws alone, so an answer never depends on its batch."""
        def batch(js: list[Job]) -> list[Sample]:
            return decode(self.model, self.tokenizer, [list(j.prompt_ids) for j in js],
                          temperature=[j.temperature for j in js],
                          seed=[j.seed for j in js], max_new_tokens=max(j.max_tokens for j in js))

        return each_or_alone(batch, jobs)

    # ------------------------------------------------------------------ uncertainty

    def _uncertainty(self, pairs: list[tuple[Job, list[int]]]) -> list[dict[str, Any] | Exception]:
        scored = each_or_alone(self._score, pairs)
        traced_at = [k for k, (j, _) in enumerate(pairs)
                     if j.profile and not isinstance(scored[k], Exception)]
        traces = each_or_alone(self._trace, [(pairs[k][0], scored[k]) for k in traced_at])
        for k, t in zip(traced_at, traces):
            scored[k] = t if isinstance(t, Exception) else {**scored[k], "tokens": t}
        if self.detector is not None:
            live = [k for k, s in enumerate(scored) if not isinstance(s, Exception)]
            verdicts = each_or_alone(self._detect, [scored[k] for k in live])
            for k, v in zip(live, verdicts):
                scored[k] = v if isinstance(v, Exception) else {**scored[k], **v}
        return [s if isinstance(s, Exception) else _public(s) for s in scored]

    def _score(self, pairs: list[tuple[Job, list[int]]]) -> list[dict[str, Any] | Exception]:
        prompts = [j.prompt for j, _ in pairs]
        ids = [scored_token_ids(self.model, self.tokenizer, j.prompt, a) for j, a in pairs]
        s = score(self.model, self.tokenizer, prompts, ids, prediction=self.prediction,
                  batch_size=len(pairs), sigma2=self.sigma2)
        out: list[dict[str, Any] | Exception] = []
        for k, a in enumerate(ids):
            row = s.row(k)
            bad = [f for f in UNCERTAINTY_FIELDS if not math.isfinite(row[f])]
            out.append(FloatingPointError(f"non-finite {', '.join(bad)} for this request") if bad
                       else {"row": row, "scored_token_ids": a, "empty": not pairs[k][1]})
        return out

    def _trace(self, items: list[tuple[Job, dict[str, Any]]]) -> list[list[dict[str, Any]]]:
        traces, _, _ = token_trace(self.model, self.tokenizer, [j.prompt for j, _ in items],
                                   [s["scored_token_ids"] for _, s in items], sigma2=self.sigma2,
                                   batch_size=max(8, len(items)))
        return [[{"id": t, "text": self.tokenizer.decode([t]), "p": float(p), "epistemic": float(e),
                  "aleatoric": float(a)}
                 for t, p, e, a in zip(tr.token_ids, tr.p, tr.epistemic, tr.aleatoric)]
                for tr in traces]

    def _detect(self, scored: list[dict[str, Any]]) -> list[dict[str, Any]]:
        res = self.detector.predict([s["row"] for s in scored])
        return [{"p_error": float(pe), "abstain": bool(ab)}
                for pe, ab in zip(res.p_error, res.abstain)]


def _public(s: dict[str, Any]) -> dict[str, Any]:
    """The response's ``uncertainty`` object from an internal scored entry."""
    row = s["row"]
    out: dict[str, Any] = {f: row[f] for f in UNCERTAINTY_FIELDS}
    out.update(n_tokens=row["n_tokens"], scored_token_ids=list(s["scored_token_ids"]),
               scored_stop_token=s["empty"])
    for k in ("p_error", "abstain", "tokens"):
        if k in s:
            out[k] = s[k]
    return out
