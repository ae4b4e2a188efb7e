"""Question answering: datasets, correctness grading, baselines, the QA pipeline.

Kept light on purpose: importing ``isograd.qa`` loads only the standard-library modules
``datasets`` and ``grading`` (no transformers, no model code). Import the heavy parts
explicitly (``isograd.qa.pipeline``, ``isograd.qa.baselines``).
"""

from .datasets import DATASETS, DatasetError, Question, load_dataset, resolve_dataset
from .grading import Grade, Judge, JudgeError, grade

__all__ = [
    "DATASETS", "DatasetError", "Grade", "Judge", "JudgeError", "Question", "grade",
    "load_dataset", "resolve_dataset",
]
