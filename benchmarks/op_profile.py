"""Where one forward pass of Ho et al.'s CIFAR-10 U-Net spends its time, op type by op type.

    python benchmarks/op_profile.py [--batch 16] [--tensorflow_ops] [--top 12]

Freezes ``UNet.ddpm_cifar10``'s forward pass at ``--batch`` (32×32×3) into a graph, runs it
in a TF1 session with full tracing (after 3 untimed runs; the fastest of 5 traced) and prints each op type's count,
op time and share, summed over TensorFlow's threads (so the total can exceed the wall
time). With ``--tensorflow_ops`` the pass is traced without kdiff's fused kernels.
"""

import argparse
import collections
import contextlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # noqa: E402

from kdiff import kernels  # noqa: E402
from kdiff.models import UNet  # noqa: E402


TRACED_PASSES = 5  # a single traced pass varies by several percent with the host


def op_times(batch=16, fused=True):
    """Op type → (count, milliseconds) of the fastest of ``TRACED_PASSES`` traced forward
    passes, and its wall time in ms."""
    network = UNet.ddpm_cifar10()
    specs = (tf.TensorSpec((batch, 32, 32, 3)), tf.TensorSpec((batch,), tf.int32))
    with contextlib.nullcontext() if fused else kernels.without_fused_kernels():
        concrete = tf.function(lambda x, t: network(x, t)).get_concrete_function(*specs)
    frozen = convert_variables_to_constants_v2(concrete)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, specs[0].shape)
        t = tf.compat.v1.placeholder(tf.int32, specs[1].shape)
        (out,) = tf.graph_util.import_graph_def(
            frozen.graph.as_graph_def(), input_map={frozen.inputs[0].name: x, frozen.inputs[1].name: t},
            return_elements=[frozen.outputs[0].name],
        )
        feed = {x: np.random.default_rng(0).standard_normal(specs[0].shape).astype("float32"),
                t: np.full(batch, 500, "int32")}
        with tf.compat.v1.Session(graph=graph) as session:
            for _ in range(3):
                session.run(out, feed)
            traced = []  # (wall ms, metadata) of each traced pass
            for _ in range(TRACED_PASSES):
                metadata = tf.compat.v1.RunMetadata()
                options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
                start = time.perf_counter()
                session.run(out, feed, options=options, run_metadata=metadata)
                traced.append(((time.perf_counter() - start) * 1e3, metadata))
            wall, metadata = min(traced, key=lambda pair: pair[0])  # the host's quietest moment
    totals = collections.defaultdict(lambda: [0, 0.0])
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            label = node.timeline_label
            op = label.split(" = ", 1)[1].split("(", 1)[0] if " = " in label else node.node_name
            totals[op][0] += 1
            totals[op][1] += node.all_end_rel_micros / 1e3
    return dict(totals), wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tensorflow_ops", action="store_true", help="without kdiff's fused kernels")
    parser.add_argument("--top", type=int, default=12, help="op types listed")
    args = parser.parse_args(argv)
    totals, wall = op_times(args.batch, fused=not args.tensorflow_ops)
    total = sum(ms for _, ms in totals.values())
    print(f"UNet.ddpm_cifar10 forward, batch {args.batch}, "
          f"{'TensorFlow ops only' if args.tensorflow_ops else kernels.status()}: "
          f"wall {wall:.0f} ms, op time {total:.0f} ms")
    for op, (count, ms) in sorted(totals.items(), key=lambda item: -item[1][1])[: args.top]:
        print(f"  {op:32s} {count:4d} ops {ms:8.1f} ms {100 * ms / total:5.1f} %")


if __name__ == "__main__":
    main()
