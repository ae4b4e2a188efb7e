"""Adapters to host frameworks; each lives in its own module behind an optional extra.

- `isograd.integrations.polygraph`: LM-Polygraph estimators (``pip install isograd[polygraph]``).

Nothing is imported here, so ``import isograd.integrations`` never pulls a host framework.
"""
