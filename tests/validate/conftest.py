"""JAX must be configured (CPU, float64, 2 host devices) before its first array op."""

import pytest

pytest.importorskip("jax")
pytest.importorskip("numpyro")

from isograd.validate.mcmc import configure_jax  # noqa: E402

configure_jax(2)
