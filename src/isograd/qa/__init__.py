"""Question answering: datasets, correctness grading, baselines, the QA pipeline.

Kept light on purpose: importing ``isograd.qa`` loads no model code (no torch, no transformers).
Import the heavy parts explicitly (``isograd.qa.pipeline``, ``isograd.qa.baselines``).
"""
