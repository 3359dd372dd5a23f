"""Sampling-speed benchmark: ``python -m kdiff.benchmark``.

Times DDIM sampling with kdiff's small U-Net (``UNet.small``, ~1M parameters) as ε_θ,
three ways:

* compiled — the step loop as one ``tf.while_loop`` in a ``tf.function`` (the default),
* XLA — the same graph with ``jit_compile=True``,
* eager — the same steps as a Python loop of eager calls (``compiled=False``),

and prints steps per second and image-steps per second for each. Tracing / compiling is
timed separately from the steady state (the best of ``--repeats`` runs).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from kdiff import samplers, schedules  # noqa: E402
from kdiff.models import UNet  # noqa: E402


def _time(fn, repeats):
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return first, best


def run(argv=None):
    """Runs the benchmark and prints a table.

    Args:
        argv: command-line arguments (``--batch``, ``--size``, ``--steps``, ``--repeats``,
            ``--width``, ``--skip_xla``).

    Returns:
        A dict mode → steps per second.
    """
    parser = argparse.ArgumentParser(prog="python -m kdiff.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=16, help="image height and width")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--width", type=int, default=32, help="U-Net base channels (a multiple of 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip_xla", action="store_true")
    args = parser.parse_args(argv)

    schedule = schedules.linear()
    net = UNet.small(image_size=args.size, in_channels=3, base_channels=args.width)
    x_T = tf.random.stateless_normal((args.batch, args.size, args.size, 3), seed=[0, 0])
    net(x_T, tf.zeros([args.batch], tf.int32))
    print(
        f"DDIM, {args.steps} steps, batch {args.batch}, {args.size}x{args.size}x3, "
        f"network: {net.count_params():,} parameters; TF {tf.__version__}, Keras {keras.__version__}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"devices: {[d.device_type for d in tf.config.list_logical_devices()]}"
    )
    modes = {
        "compiled (tf.function + while_loop)": dict(jit_compile=False),
        "compiled with XLA (jit_compile=True)": dict(jit_compile=True),
        "eager (Python loop)": dict(compiled=False),
    }
    if args.skip_xla:
        modes.pop("compiled with XLA (jit_compile=True)")
    results = {}
    print(f"{'mode':40s} {'first call s':>12s} {'steps/s':>9s} {'image-steps/s':>14s}")
    for name, options in modes.items():
        first, best = _time(
            lambda: samplers.ddim(net, x_T, schedule, steps=args.steps, seed=0, **options).numpy(),
            args.repeats,
        )
        results[name] = args.steps / best
        print(f"{name:40s} {first:12.2f} {results[name]:9.1f} {results[name] * args.batch:14.1f}")
    speedup = results["compiled (tf.function + while_loop)"] / results["eager (Python loop)"]
    print(f"compiled / eager: {speedup:.2f}x")
    return results


if __name__ == "__main__":
    run()
