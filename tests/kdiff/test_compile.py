"""Every fixed-step sampler traces into one XLA-compiled graph with a Keras model inside."""

import numpy as np
import pytest
import tensorflow as tf
from tiny_network import TinyNet

from kdiff import losses, samplers, schedules
from kdiff import sde as sde_lib


SCHEDULE = schedules.linear(T=100)
SIGMAS = schedules.geometric_sigmas(1.0, 0.01, 5)
VP = sde_lib.VPSDE(N=100)

CASES = {
    "ddpm": lambda net, x, **kw: samplers.ddpm(net, x, SCHEDULE, steps=20, **kw),
    "ddpm_learned": lambda net, x, **kw: samplers.ddpm(
        lambda x, t: [net(x, t), tf.zeros_like(x)], x, SCHEDULE, variance="learned", steps=20, **kw
    ),
    "ddim": lambda net, x, **kw: samplers.ddim(net, x, SCHEDULE, steps=20, **kw),
    "ddim_eta1": lambda net, x, **kw: samplers.ddim(net, x, SCHEDULE, steps=20, eta=1.0, **kw),
    "ddim_invert": lambda net, x, **kw: samplers.ddim_invert(net, x, SCHEDULE, steps=20, **kw),
    "langevin": lambda net, x, **kw: samplers.langevin(net, x, 1e-3, 10, **kw),
    "annealed_langevin": lambda net, x, **kw: samplers.annealed_langevin(net, x, SIGMAS, 4, denoise=True, **kw),
    "euler_maruyama": lambda net, x, **kw: samplers.euler_maruyama(net, x, VP, 20, **kw),
    "predictor_corrector": lambda net, x, **kw: samplers.predictor_corrector(
        net, x, VP, 10, predictor="reverse_diffusion", **kw
    ),
    "probability_flow_rk4": lambda net, x, **kw: samplers.probability_flow(net, x, VP, method="rk4", steps=10, **kw),
}
DETERMINISTIC = {"ddim", "ddim_invert", "probability_flow_rk4"}


@pytest.fixture(scope="session")
def net():
    model = TinyNet(in_channels=3)
    model(tf.zeros((1, 8, 8, 3)), tf.zeros((1,)))
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_sampler_compiles_with_xla(net, name):
    x = tf.random.stateless_normal((4, 8, 8, 3), seed=[0, 1])
    sampler = CASES[name]
    xla = tf.function(lambda x: sampler(net, x, seed=5), jit_compile=True)
    out = xla(x)
    assert out.shape == x.shape and bool(tf.reduce_all(tf.math.is_finite(out)))
    plain = sampler(net, x, seed=5, jit_compile=False)
    if name in DETERMINISTIC:
        np.testing.assert_allclose(out.numpy(), plain.numpy(), rtol=1e-4, atol=1e-4)
    else:
        # XLA draws stateless normals with its own algorithm, so only the law matches;
        # without XLA, eager and graph give the same numbers (test_samplers).
        assert out.numpy().std() == pytest.approx(plain.numpy().std(), rel=0.2)


def test_sampler_loop_is_one_while_loop(net):
    """The step loop is a graph loop, not a Python loop unrolled into the graph."""
    x = tf.zeros((2, 8, 8, 3))
    graph = tf.function(lambda x: samplers.ddim(net, x, SCHEDULE, steps=50)).get_concrete_function(x).graph
    op_types = [op.type for op in graph.get_operations()]
    assert "While" in op_types or "StatelessWhile" in op_types
    convs = sum(t == "Conv2D" for t in op_types)
    assert convs == 0  # the network's convolutions live inside the loop body, once


_T = tf.constant([3, 50, 99, 0])
_NOISE = tf.random.stateless_uniform((4, 8, 8, 3), seed=[4, 5], minval=-2, maxval=2)
LOSSES = {  # explicit t / labels / noise where a loss takes them, so XLA and graph agree
    "simple": lambda net, x: losses.simple(net, x, SCHEDULE, t=_T, noise=_NOISE),
    "hybrid": lambda net, x: losses.hybrid(
        lambda x, t: [net(x, t), tf.tanh(net(x, t))], x, SCHEDULE, t=_T, noise=_NOISE
    ),
    "dsm": lambda net, x: losses.dsm(net, x, SIGMAS, labels=_T % 5, noise=_NOISE),
    "sliced_score_matching": lambda net, x: losses.sliced_score_matching(net, x, sigmas=SIGMAS, seed=1),
    "sde_dsm": lambda net, x: losses.sde_dsm(net, x, VP, t=tf.constant([0.1, 0.4, 0.7, 1.0]), noise=_NOISE),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_and_gradients_compile_with_xla(net, name):
    x = tf.random.stateless_uniform((4, 8, 8, 3), seed=[2, 3], minval=-1, maxval=1)

    def loss_and_grads(x):
        with tf.GradientTape() as tape:
            loss = LOSSES[name](net, x)
        return loss, tape.gradient(loss, net.trainable_variables)

    loss, grads = tf.function(loss_and_grads, jit_compile=True)(x)
    assert bool(tf.math.is_finite(loss))
    assert all(g is not None and bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads)
    if name != "sliced_score_matching":  # its random projections differ under XLA
        plain_loss, plain_grads = tf.function(loss_and_grads)(x)
        np.testing.assert_allclose(float(loss), float(plain_loss), rtol=1e-4)
        np.testing.assert_allclose(grads[0].numpy(), plain_grads[0].numpy(), rtol=1e-3, atol=1e-6)
