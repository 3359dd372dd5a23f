"""The benchmark's yardsticks: FLOP counts and the convolution peak."""

import keras
import pytest

from kdiff import benchmark


class OneConv(keras.Model):
    """network(x, t) = a 3×3 convolution of x (t unused)."""

    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)

    def call(self, x, t):
        return self.conv(x)


def test_network_gflop_counts_a_convolution_exactly():
    network = OneConv()
    network(keras.ops.zeros((1, 8, 8, 4)), keras.ops.zeros((1,), "int32"))
    # 2 FLOPs (multiply, add) per weight per output pixel: 2·B·H·W·(3·3·Cin)·Cout.
    assert benchmark.network_gflop(network, 5, (8, 8, 4)) * 1e9 == pytest.approx(2 * 5 * 8 * 8 * 9 * 4 * 16)


def test_conv_peak_is_a_positive_rate():
    assert benchmark.conv_peak(batch=1, size=8, channels=32, rounds=1) > 0


def test_alternating_rounds_call_each_function_in_turn_and_keep_its_best(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: clock["now"])
    calls, durations = [], {"a": iter([3.0, 1.0, 2.0]), "b": iter([0.5, 2.0, 1.5])}

    def timed(name):
        def fn():
            calls.append(name)
            clock["now"] += next(durations[name])
        return fn

    monkeypatch.setattr(benchmark.time, "sleep", lambda seconds: calls.append(f"idle {seconds}"))
    best = benchmark._alternating_best({"a": timed("a"), "b": timed("b")}, rounds=3, settle=0.5)
    assert calls == ["idle 0.5", "a", "idle 0.5", "b"] * 3  # idle time before each timed call, not timed
    assert best == {"a": 1.0, "b": 0.5}
