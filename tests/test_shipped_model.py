"""The model shipped in saved_models/ works on a fresh install and draws recognizable digits."""

import os

import numpy as np
import pytest
from paths import REPO
from sklearn.svm import SVC

import kdiff

PATH = os.path.join(REPO, "saved_models", "ddpm_digits")


def _classifier():
    images, labels = kdiff.digits.load(8, data_range=(0.0, 1.0), return_labels=True)
    flat = images.reshape(len(images), -1)
    return SVC(probability=True, random_state=0).fit(flat[:1500], labels[:1500]), flat[1500:]


@pytest.mark.slow
def test_shipped_model_samples_recognizable_digits():
    config = kdiff.export.read_config(PATH)
    assert config["family"] == "ddpm" and config["image_shape"] == [8, 8, 1]
    model = kdiff.export.load(PATH)  # loaded once: the second call reuses the first's traced loop
    images = kdiff.sample(model, 100, steps=50, seed=0, clip_x0=1.0)
    assert images.shape == (100, 8, 8, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:8], kdiff.sample(model, 8, steps=50, seed=0, clip_x0=1.0, batch_size=100))
    classifier, held_out = _classifier()
    generated = classifier.predict_proba(images.reshape(100, -1) / 255.0)
    real = classifier.predict_proba(held_out)
    rng = np.random.default_rng(0)
    noise = classifier.predict_proba(rng.uniform(0, 1, (100, 64)))
    # Confident like real digits, far above noise, and every class drawn.
    assert generated.max(1).mean() > real.max(1).mean() - 0.15, (generated.max(1).mean(), real.max(1).mean())
    assert generated.max(1).mean() > noise.max(1).mean() + 0.2
    assert len(set(generated.argmax(1))) == 10
    assert os.path.getsize(os.path.join(PATH, "saved_model.pb")) + sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(os.path.join(PATH, "variables")) for f in files
    ) < 10 * 2**20


FASHION = os.path.join(os.path.dirname(PATH), "ddpm_fashion_mnist")


@pytest.mark.slow
def test_shipped_fashion_model_draws_garments_not_noise():
    # Fashion-MNIST is not on every machine: what the samples must look like is checked
    # against the data's known statistics (a dark background, about 29 % mean intensity),
    # which noise (mean 50 %, no background) fails.
    config = kdiff.export.read_config(FASHION)
    assert config["family"] == "ddpm" and config["image_shape"] == [32, 32, 1]
    assert config["default_sampler"] == "ddpm" and config["generate"]["sampler"] == "ddpm"
    model = kdiff.export.load(FASHION)
    images = kdiff.sample(model, 16, steps=20, seed=0)
    assert images.shape == (16, 32, 32, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:4], kdiff.sample(model, 4, steps=20, seed=0, batch_size=16))
    pixels = images / 255.0
    assert 0.12 < pixels.mean() < 0.45, pixels.mean()
    background = (pixels < 0.1).mean(axis=(1, 2, 3))
    assert np.all(background > 0.2), background  # every sample has a dark background around its garment
    noise = np.random.default_rng(0).uniform(0, 1, pixels.shape)
    assert (noise < 0.1).mean() < 0.12
