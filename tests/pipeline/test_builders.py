"""pipeline.builders with the real network presets: defaults from RunConfig, precision as
a dtype policy, initial weights from the seed alone (no global RNG left changed)."""

import random

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdiff import distribute
from pipeline import builders, config

SHAPE = (8, 8, 1)


def _params(family, **overrides):
    cfg = config.preset("tiny", family=family, **overrides)
    return dict(cfg.to_dict(), data_range=list(cfg.data_range))


def _weights(model):
    return model.network.get_weights() + model.ema_network.get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ddpm", "ncsn"])
def test_initial_weights_come_from_the_seed_alone(family):
    params = _params(family)
    random.seed(1)
    np.random.seed(1)
    tf.random.set_seed(1)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    first = builders.build_model(params, SHAPE)
    assert random.getstate() == python_state  # no global RNG left reseeded
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state[1])
    random.seed(99)  # other global states: the same weights
    tf.random.set_seed(7)
    keras.random.normal((1,))  # advances Keras' global seed generator
    second = builders.build_model(params, SHAPE)
    for a, b in zip(_weights(first), _weights(second)):
        np.testing.assert_array_equal(a, b)
    other = builders.build_model(dict(params, seed=1), SHAPE)
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(first), _weights(other)))
    # The same weights as a build after keras.utils.set_random_seed (the former recipe).
    keras.utils.set_random_seed(0)
    reference = builders.build_network(params, SHAPE, loss=config.resolve_loss(family, params["network"], None))
    for a, b in zip(first.network.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("precision, compute", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_precision_is_the_models_dtype_policy(precision, compute):
    before = keras.config.dtype_policy().name
    model = builders.build_model(_params("ddpm", precision=precision), SHAPE)
    assert keras.config.dtype_policy().name == before == "float32"  # no global toggle
    assert model.network.compute_dtype == compute and model.ema_network.compute_dtype == compute
    assert all(w.dtype == "float32" for w in model.network.weights)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "mixed_float16")
    plain = builders.build_model(_params("ddpm"), SHAPE)  # --precision=auto: the machine's default
    assert plain.network.compute_dtype == keras.DTypePolicy(distribute.default_precision()).compute_dtype


def test_builder_defaults_are_run_config_defaults():
    defaults = config.RunConfig()
    schedule = builders.make_optimizer({})._learning_rate
    assert schedule.peak == pytest.approx(defaults.learning_rate)
    assert schedule.warmup_steps == defaults.warmup_steps
    model = builders.build_model({"family": "ncsn", "base_channels": 16, "num_sigmas": 3}, SHAPE)
    assert model.ema_decay == pytest.approx(defaults.ema_decay)
    assert model.data_range == config.family_data_range("ncsn") == (0.0, 1.0)
    assert type(model.network).__name__ == "RefineNet"  # the family's default network
    assert len(builders.build_process({"family": "ddpm"}).betas) == defaults.T


def test_the_medium_scale_networks():
    """unet_medium is Ho et al.'s layout scaled down (ch 32, mult 1, 2, 4, one block, attention
    at 8×8: 2,734,945 parameters at 32×32×1); ncsnpp_small is an NCSN++ that trains under the
    VE SDE on the pipeline's [−1, 1] data (σ conditioning, input not re-centred)."""
    from kdiff.models import NCSNpp

    unet = builders.build_network(_params("ddpm", network="unet_medium", base_channels=None, num_res_blocks=None),
                                  (32, 32, 1))
    assert unet.count_params() == 2_734_945
    config_ = unet.get_config()
    assert tuple(config_["channel_mult"]) == (1, 2, 4) and config_["num_res_blocks"] == 1
    assert tuple(config_["attention_resolutions"]) == (8,)
    score = builders.build_network(_params("sde", network="ncsnpp_small", sde="ve", num_res_blocks=None), (32, 32, 1))
    assert isinstance(score, NCSNpp) and not score.center_input and score.conditioning == "sigma"
    assert tuple(score.channels) == (32, 64, 64)
    with pytest.raises(ValueError, match="divisible by 4"):
        builders.build_network(_params("ddpm", network="unet_medium", base_channels=None, num_res_blocks=None),
                               (30, 30, 1))
    with pytest.raises(ValueError, match="NCSN\\+\\+ has no class embeddings"):
        config.preset("tiny", family="sde", network="ncsnpp_small", class_conditional=True, num_res_blocks=None)
    with pytest.raises(ValueError, match="base_channels"):
        config.preset("tiny", family="sde", network="ncsnpp_small", base_channels=40, num_res_blocks=None)
    with pytest.raises(ValueError, match="network"):
        config.preset("tiny", family="ncsn", network="ncsnpp_small")
