"""Probability-flow likelihoods equal the analytic log-density of Gaussian data."""

import math

import numpy as np
import pytest

from kdiff import likelihood
from kdiff import sde as sde_lib


def _analytic_bpd(gaussian, x0):
    z = (x0 - gaussian.mu) / gaussian.s
    logp = (-0.5 * np.log(2 * np.pi * gaussian.s**2) - 0.5 * z**2).sum(axis=1)
    return -logp / (x0.shape[1] * math.log(2))


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.SubVPSDE(), sde_lib.VESDE()], ids=repr)
@pytest.mark.parametrize("estimator", ["rademacher", "exact"])
def test_bits_per_dim_of_gaussian_data_matches_analytic(gaussian, sde, estimator):
    x0 = gaussian.sample((200, 4), seed=5)
    bpd = likelihood.bits_per_dim(gaussian.sde_score_fn(sde), x0, sde, estimator=estimator)
    expected = _analytic_bpd(gaussian, x0)
    assert abs(bpd.mean() - expected.mean()) / abs(expected.mean()) < 0.01
    # Per example too: the ODE is exact for this model.
    np.testing.assert_allclose(bpd, expected, atol=0.03)


def test_gaussian_hutchinson_probe_is_unbiased(gaussian):
    sde = sde_lib.VPSDE()
    x0 = gaussian.sample((400, 4), seed=6)
    bpd = likelihood.bits_per_dim(gaussian.sde_score_fn(sde), x0, sde, estimator="gaussian", seed=3)
    expected = _analytic_bpd(gaussian, x0)
    error = bpd - expected
    assert abs(error.mean()) < 4 * error.std() / np.sqrt(len(error))


def test_offset_and_wrong_model_give_worse_bits(gaussian):
    sde = sde_lib.VPSDE()
    x0 = gaussian.sample((64, 4), seed=7)
    good = likelihood.bits_per_dim(gaussian.sde_score_fn(sde), x0, sde)
    shifted = likelihood.bits_per_dim(gaussian.sde_score_fn(sde), x0, sde, offset=7.0)
    np.testing.assert_allclose(shifted, good + 7.0)
    wrong = likelihood.bits_per_dim(lambda x, t: -x, x0, sde)  # the score of N(0, I) data
    assert wrong.mean() > good.mean() + 0.1


def test_log_likelihood_reports_latent_and_nfe(gaussian):
    sde = sde_lib.VPSDE()
    x0 = gaussian.sample((16, 3), seed=8)
    logp, z, nfe = likelihood.log_likelihood(gaussian.sde_score_fn(sde), x0, sde)
    assert logp.shape == (16,) and z.shape == (16, 3) and nfe > 10
    assert abs(float(np.std(z)) - 1.0) < 0.4  # the latent is a prior draw


def test_bad_input(gaussian):
    sde = sde_lib.VPSDE()
    x0 = gaussian.sample((4, 2))
    with pytest.raises(ValueError, match="estimator"):
        likelihood.bits_per_dim(gaussian.sde_score_fn(sde), x0, sde, estimator="skilling")
    with pytest.raises(ValueError, match="sde"):
        likelihood.bits_per_dim(gaussian.sde_score_fn(sde), x0, "vp")
    with pytest.raises(ValueError, match="x0"):
        likelihood.bits_per_dim(gaussian.sde_score_fn(sde), np.zeros(4, np.float32), sde)
