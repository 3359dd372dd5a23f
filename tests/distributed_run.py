"""Trains a small DDPM under a strategy and prints the loss trajectory and weights as JSON.

Run by tests/kdiff/test_distribute.py in fresh processes (logical CPU devices and TF_CONFIG must
be set before TensorFlow starts):

    python distributed_run.py single|mirrored        # one process, 2 logical CPUs
    python distributed_run.py multi_worker INDEX PORT0,PORT1
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
mode = sys.argv[1]
if mode == "multi_worker":
    index, ports = int(sys.argv[2]), sys.argv[3].split(",")
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if mode != "multi_worker":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from tiny_network import TinyNet  # noqa: E402

import kdiff  # noqa: E402

strategy = {
    "single": lambda: kdiff.distribute.get_strategy("default"),
    "mirrored": lambda: kdiff.distribute.get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"]),
    "multi_worker": lambda: kdiff.distribute.get_strategy("multi_worker"),
}[mode]()
data = np.random.default_rng(0).uniform(-1, 1, (64, 8, 8, 1)).astype("float32")
dataset = tf.data.Dataset.from_tensor_slices(data).batch(16)  # the global batch
with strategy.scope():
    keras.utils.set_random_seed(1)
    model = kdiff.DDPM(TinyNet(), kdiff.schedules.linear(T=100), ema_decay=0.9)
    model.compile(optimizer=kdiff.optim.adam(1e-3, warmup_steps=0))
losses = []
record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: losses.append(float(logs["loss"])))
if mode == "multi_worker":
    kdiff.distribute.fit(model, dataset, epochs=2, strategy=strategy, callbacks=[record], verbose=0)
else:
    model.fit(dataset, epochs=2, verbose=0, callbacks=[record])
print(
    "RESULT "
    + json.dumps(
        {
            "replicas": strategy.num_replicas_in_sync,
            "losses": losses,
            "weights": [w.tolist() for w in model.network.get_weights()],
            "ema": [w.tolist() for w in model.ema_network.get_weights()],
        }
    ),
    flush=True,
)
