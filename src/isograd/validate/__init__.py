"""Validation of the estimates against an MCMC reference on synthetic problems (paper §4.1).

Needs the `validate` extra (jax, numpyro, scipy, matplotlib). Entry points:
`study.run_study` (`isograd validate`), `covstudy.run_covariance_study` (`isograd validate
--study covariance`: every covariance Σ in gᵀΣg, `covariances` builds them), `mcmc.mcmc_reference`,
`laplace.laplace_variance`, `problems.make_problem`, `nets.TorchMLP` / `nets.jax_apply`.
"""
