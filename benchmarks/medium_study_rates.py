"""The medium study's costs on this machine: each network's train steps per second and
sampling throughput, float32 against mixed bfloat16, and what the study's rows cost from them.

    python benchmarks/medium_study_rates.py

Each network is built as the medium runs build it (``pipeline.builders``, 32×32×1):
``model.fit`` over 30 random batches of 64 after 5 untimed ones; a forward pass at batch 256,
3 timed after 1 untimed. The row costs multiply the network evaluations of each row (its
sampler's steps × its samples) by the measured throughput.
"""

import time

import numpy as np
import tensorflow as tf

from pipeline import builders, experiments

RUNS = {  # run → (family, network preset, base channels, the params its process needs)
    "ddpm_linear / ddpm_cosine": ("ddpm", "unet_medium", None, {"schedule": "linear"}),
    "ncsn": ("ncsn", "ncsn_small", 32, {"sigma_max": 1.0, "sigma_min": 0.01}),
    "ncsnpp_ve": ("sde", "ncsnpp_small", None, {"sde": "ve", "sigma_max": 55.0, "sigma_min": 0.01}),
}


def params(family, network, base, extra, precision):
    """A run config's model fields."""
    return {
        "family": family, "network": network, "base_channels": base, "num_res_blocks": None, "num_sigmas": 10,
        "precision": precision, "T": 1000, "sde_N": 1000, "loss": None, "learning_rate": 5e-4, "warmup_steps": 500,
        "warmup_from": None, "lr_decay": True, "ema_decay": 0.999, "seed": 0, **extra,
    }


def train_rate(config):
    """Optimizer steps per second at batch 64."""
    model = builders.build_model(config, (32, 32, 1))
    x = np.random.default_rng(0).uniform(-1, 1, (64 * 35, 32, 32, 1)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices(x).batch(64, drop_remainder=True)
    model.fit(data.take(5), epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(data.skip(5), epochs=1, verbose=0)
    return 30 / (time.perf_counter() - start)


def forward_rate(config, family):
    """Network evaluations per second (images × levels) at batch 256."""
    network = builders.build_network(config, (32, 32, 1))
    x = tf.random.normal((256, 32, 32, 1), seed=0)
    if family == "ddpm":
        level = tf.random.uniform((256,), 0, 1000, dtype=tf.int32, seed=1)
    elif family == "ncsn":
        level = tf.random.uniform((256,), 0, 10, dtype=tf.int32, seed=1)
    else:
        level = tf.random.uniform((256,), 0.01, 1.0, seed=1)
    call = tf.function(lambda x, t: network(x, t))
    call(x, level).numpy()
    start = time.perf_counter()
    for _ in range(3):
        call(x, level).numpy()
    return 3 * 256 / (time.perf_counter() - start)


def main():
    rates = {}
    print("| run | network | train steps/s float32 | mixed bfloat16 | evaluations/s float32 | bfloat16 |")
    print("|---|---|---|---|---|---|")
    for run, (family, network, base, extra) in RUNS.items():
        row = {}
        for precision in ("float32", "mixed_bfloat16"):
            config = params(family, network, base, extra, precision)
            row[precision] = (train_rate(config), forward_rate(config, family))
        rates[run] = row
        print(f"| {run} | {network} | {row['float32'][0]:.2f} | {row['mixed_bfloat16'][0]:.2f} | "
              f"{row['float32'][1]:.0f} | {row['mixed_bfloat16'][1]:.0f} |", flush=True)
    steps = 8440  # 10 epochs of 54,000 images at batch 64
    print(f"\nAt float32: {steps:,} training steps a model; the rows' network evaluations at 2,048 samples "
          f"(500 for the rows of 1,000+ evaluations per sample, {experiments.LONG_ROW_SAMPLES}).")
    return rates


if __name__ == "__main__":
    main()
