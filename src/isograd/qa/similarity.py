"""Answer text, normalised and compared: SQuAD normalisation (made Unicode-aware), normalised
tokens with numbers in words written as digits, and the similarities the graders use (SQuAD token
F1, ROUGE-L, sentence BLEU), all on the same tokens. The rules that decide correctness from them
live in `isograd.qa.grading`.

Only the standard library.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence

from .numbers import numbers_to_digits

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation, made Unicode-aware: NFKC, lowercase, punctuation removed (ASCII and
    Unicode category P*, e.g. curly quotes), articles removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text
                   if ch not in _ASCII_PUNCT and not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """Normalised whitespace tokens, numbers in words written as digits ("eight" -> "8",
    `isograd.qa.numbers`), so that every grader matches "8 legs" with "eight"."""
    return numbers_to_digits(normalize_answer(text).split())


def token_f1(pred: str, ref: str) -> float:
    """SQuAD token F1 between normalised token bags."""
    p, r = tokens(pred), tokens(ref)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def best_token_f1(answer: str, references: Sequence[str]) -> float:
    """The largest `token_f1` of `answer` against any reference (0 with no references)."""
    return max((token_f1(answer, r) for r in references), default=0.0)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure (β = 1) on normalised tokens."""
    p, r = tokens(pred), tokens(ref)
    if not p or not r:
        return float(p == r)
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


def bleu(pred: str, ref: str, *, max_n: int = 4) -> float:
    """Sentence BLEU on normalised tokens, in [0, 1]: geometric mean of clipped n-gram precisions
    (n = 1..max_n, orders longer than the prediction dropped; add-one smoothing for n > 1, as
    Lin & Och 2004) times the brevity penalty."""
    p, r = tokens(pred), tokens(ref)
    if not p or not r:
        return float(p == r)
    logs = []
    for n in range(1, min(max_n, len(p)) + 1):
        pc = Counter(tuple(p[i:i + n]) for i in range(len(p) - n + 1))
        rc = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
        match, total = sum((pc & rc).values()), sum(pc.values())
        if n == 1:
            if match == 0:
                return 0.0
            logs.append(math.log(match / total))
        else:
            logs.append(math.log((match + 1) / (total + 1)))
    bp = 1.0 if len(p) > len(r) else math.exp(1 - len(r) / len(p))
    return bp * math.exp(sum(logs) / len(logs))


SIMILARITIES: dict[str, Callable[[str, str], float]] = {
    "rouge_l": rouge_l, "f1": token_f1, "bleu": bleu,
}
