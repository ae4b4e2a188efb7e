"""Causal language models: loading, prompts, answer probability, generation, scoring."""

from .answer import AnswerRow, Answers, answer, scored_token_ids
from .choices import ChoiceScores, score_choices
from .generate import greedy_answer, greedy_answers
from .models import DEFAULT_MODEL, load_model
from .prompts import PromptStyle, mc_prompt, qa_prompt
from .sampling import Sample, sample_answers
from .score import LMScores, Prediction, score, token_trace

__all__ = [
    "AnswerRow",
    "Answers",
    "DEFAULT_MODEL",
    "ChoiceScores",
    "LMScores",
    "Prediction",
    "PromptStyle",
    "Sample",
    "answer",
    "greedy_answer",
    "greedy_answers",
    "load_model",
    "mc_prompt",
    "qa_prompt",
    "sample_answers",
    "score",
    "score_choices",
    "scored_token_ids",
    "token_trace",
]
