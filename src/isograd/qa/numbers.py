"""Numbers written in words become digits, so that "A spider has 8 legs." matches "eight".

Works on normalised tokens (`isograd.qa.similarity.tokens`: lowercase, punctuation and articles
gone, so "twenty-two" arrives as "twentytwo" and "1,000" as "1000"). A run of number words
is read as one number: "twenty two" -> "22", "one hundred and five" -> "105", "two
thousand" -> "2000", "hundred" -> "100" (its article is gone); two units in a row are two
numbers ("two three" -> "2 3"). Ordinals and fractions are left as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
TENS = {w: 10 * i for i, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}


def _small(word: str) -> tuple[int, str] | None:
    """(value, kind) of a word below 100: kind "unit" (0–19), "tens", or "compound"
    ("twentytwo", a hyphenated pair whose hyphen normalisation removed)."""
    if word in UNITS:
        return UNITS[word], "unit"
    if word in TENS:
        return TENS[word], "tens"
    for t, v in TENS.items():
        rest = word[len(t):]
        if word.startswith(t) and rest in UNITS and 0 < UNITS[rest] < 10:
            return v + UNITS[rest], "compound"
    return None


def numbers_to_digits(words: Sequence[str]) -> list[str]:
    """`words` with each run of number words replaced by its value in digits."""
    out: list[str] = []
    total = current = 0
    prev = ""  # kind of the previous word of the run ("" = no run open)

    def flush() -> None:
        nonlocal total, current, prev
        if prev:
            out.append(str(total + current))
        total = current = 0
        prev = ""

    for i, w in enumerate(words):
        if w == "and" and prev == "scale" and i + 1 < len(words) and _small(words[i + 1]):
            continue  # "one hundred and five"
        small = _small(w)
        if small is not None:
            v, kind = small
            # a unit after a unit or tens-with-unit, or tens after anything small: a new number
            if prev in ("unit", "compound") or (prev == "tens" and kind != "unit"):
                flush()
            current += v
            prev = kind
        elif w in SCALES:
            s = SCALES[w]
            if s == 100:
                current = max(current, 1) * 100
            else:
                total += max(current, 1) * s
                current = 0
            prev = "scale"
        else:
            flush()
            out.append(w)
    flush()
    return out
