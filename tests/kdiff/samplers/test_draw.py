"""``kdiff.samplers.draw``, the batch drawing that ``kdiff.sample`` and an export's ``generate``
share: a model's ``DrawCache`` keeps one traced loop per request."""

import numpy as np
import tensorflow as tf

import kdiff
from kdiff import schedules

SHAPE = (8, 8, 1)


def test_a_second_call_reuses_the_traced_loop_and_draws_the_same_images():
    from tiny_network import TinyNet

    schedule = schedules.linear(T=50)
    model = kdiff.DDPM(TinyNet(8, 1), schedule, ema_decay=0.0)
    first = kdiff.sample(model, 5, sampler="ddim", steps=4, seed=3, batch_size=3)  # batches of 3 and 2
    cache = model.sampling_spec().draw_cache
    ((function, _relay),) = cache._functions.values()
    assert len(cache) == 1 and function.experimental_get_tracing_count() == 1
    again = kdiff.sample(model, 4, sampler="ddim", steps=4, seed=3, batch_size=3)
    assert function.experimental_get_tracing_count() == 1  # no new trace for another count
    np.testing.assert_array_equal(again[:3], first[:3])
    # A callable model has no cache: traced per call, the very same images.
    plain = kdiff.sample(model.model_fn(), 5, sampler="ddim", steps=4, seed=3, batch_size=3,
                         schedule=schedule, image_shape=SHAPE)
    np.testing.assert_array_equal(plain, first)
    # Other options, another entry; an option that is not a plain value is not cached.
    kdiff.sample(model, 2, sampler="ddim", steps=5, seed=0)
    assert len(cache) == 2
    assert kdiff.samplers.draw.DrawCache.key("ddim", {"eta": tf.constant(0.5)}) is None
    assert kdiff.samplers.draw.DrawCache.key("ddim", {"eta": 0.5}) != kdiff.samplers.draw.DrawCache.key("ddim", {"eta": 0})
