"""Every sampler's output on closed-form model functions, pinned (``tests/fixtures/sampler_pins.npz``,
written by ``tests/fixtures/make_sampler_pins.py``): reorganising the sampling code must not
change what it samples. The tolerance allows another CPU's float32 kernels, nothing more."""

import os

import numpy as np
import pytest

from paths import FIXTURES
from sampler_pin_cases import CASES, run_case, run_extras

PINS = os.path.join(FIXTURES, "sampler_pins.npz")


@pytest.fixture(scope="module")
def pins():
    with np.load(PINS) as data:
        return dict(data)


@pytest.mark.parametrize("name", [case[0] for case in CASES])
def test_sampler_output_is_pinned(pins, name):
    out = run_case(name)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, pins[name], rtol=1e-5, atol=1e-5)


def test_unregistered_samplers_and_sample_are_pinned(pins):
    for key, out in run_extras().items():
        np.testing.assert_allclose(out, pins[key], rtol=1e-5, atol=1e-5, err_msg=key)
