"""kdiff.kernels: the fused GroupNorm (+ SiLU) kernel equals TensorFlow's ops — values,
first and second derivatives, float32 and bfloat16 — normalizes to the closed form, is
deterministic, rejects bad shapes by name, stays out of SavedModels and XLA, and falls
back to TensorFlow's ops (with one warning) where it cannot be built."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from derivatives import hessian_vector, jvp
from paths import REPO

from kdiff import kernels
from kdiff.kernels import _build
from kdiff.kernels.normalization import composed_group_norm, group_norm

pytestmark = pytest.mark.skipif(kernels.library("group_norm") is None, reason=f"no fused kernel here: {kernels.status('group_norm')}")


def _case(shape, groups, seed=0, dtype=tf.float32):
    rng = np.random.default_rng(seed)
    x = tf.constant((3.0 * rng.standard_normal(shape) + 1.5).astype(np.float32), dtype)
    gamma = tf.constant(rng.uniform(0.5, 2.0, shape[-1]).astype(np.float32))
    beta = tf.constant(rng.standard_normal(shape[-1]).astype(np.float32))
    return x, gamma, beta


def _fused_ops(function, *args):
    graph = tf.function(function).get_concrete_function(*args).graph
    return sorted({op.type for op in graph.get_operations() if op.type.startswith("Kdiff")})


SHAPES = [((2, 5, 6, 12), 3), ((3, 4, 4, 32), 32), ((2, 7, 64), 8), ((4, 16), 4), ((1, 2, 3, 2, 8), 2)]


@pytest.mark.parametrize("shape, groups", SHAPES)
@pytest.mark.parametrize("activation", [None, "silu"])
def test_fused_values_and_gradients_equal_tensorflows_ops(shape, groups, activation):
    x, gamma, beta = _case(shape, groups)
    dy = tf.constant(np.random.default_rng(1).standard_normal(shape).astype(np.float32))

    def values_and_gradients(norm):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            y = norm(x, gamma, beta, groups, 1e-6, activation)
        return [y, *tape.gradient(y, [x, gamma, beta], output_gradients=dy)]

    assert _fused_ops(lambda x: group_norm(x, gamma, beta, groups, 1e-6, activation), x) == ["KdiffGroupNorm"]
    for got, want in zip(values_and_gradients(group_norm), values_and_gradients(composed_group_norm)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-5, atol=2e-5)


def test_normalized_groups_have_zero_mean_and_unit_variance():
    """With γ = 1 and β = 0 each example's group has mean 0 and variance σ²/(σ² + ε)."""
    x, _, _ = _case((3, 8, 8, 16), 4)
    y = group_norm(x, None, None, 4, 1e-3).numpy().reshape(3, 64, 4, 4)
    groups = x.numpy().reshape(3, 64, 4, 4)
    variance = groups.var(axis=(1, 3))
    np.testing.assert_allclose(y.mean(axis=(1, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(1, 3)), variance / (variance + 1e-3), rtol=1e-5)


@pytest.mark.parametrize("activation", [None, "silu"])
def test_second_derivatives_and_forward_mode_equal_tensorflows_ops(activation):
    """A Hessian-vector product (the gradient of the gradient kernel) and a forward-mode
    Jacobian-vector product go through the fused op and equal the composed form's."""
    x, gamma, beta = _case((2, 4, 4, 8), 2)
    v = tf.constant(np.random.default_rng(3).standard_normal(x.shape).astype(np.float32))

    for product in (hessian_vector, jvp):
        got, want = (product(lambda x: norm(x, gamma, beta, 2, 1e-6, activation), x, v)
                     for norm in (group_norm, composed_group_norm))
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_bfloat16_in_and_out_with_float32_statistics():
    """bfloat16 tensors are normalized with float32 statistics: the result is the float32
    result of the same (bfloat16) input, rounded once."""
    x, gamma, beta = _case((2, 8, 8, 32), 8, dtype=tf.bfloat16)
    got = group_norm(x, gamma, beta, 8, 1e-6, "silu")
    assert got.dtype == tf.bfloat16
    want = composed_group_norm(tf.cast(x, tf.float32), gamma, beta, 8, 1e-6, "silu")
    np.testing.assert_allclose(
        tf.cast(got, tf.float32).numpy(), tf.cast(tf.cast(want, tf.bfloat16), tf.float32).numpy(), rtol=8e-3, atol=8e-3
    )


def test_same_input_gives_the_same_bits():
    x, gamma, beta = _case((8, 16, 16, 64), 32)
    first, second = (group_norm(x, gamma, beta, 32, 1e-6, "silu").numpy() for _ in range(2))
    assert first.tobytes() == second.tobytes()


def test_bad_shapes_are_named():
    library = kernels.library("group_norm")
    x, gamma, beta = _case((2, 4, 4, 6), 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="channels divisible by groups=4; received 6"):
        library.kdiff_group_norm(x, gamma, beta, groups=4, epsilon=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="gamma and beta of 6 values"):
        library.kdiff_group_norm(x, gamma[:4], beta, groups=3, epsilon=1e-6)
    with pytest.raises(ValueError, match="`activation` None or 'silu'. Received: activation='relu'"):
        group_norm(x, gamma, beta, 3, 1e-6, "relu")
    with pytest.raises(ValueError, match=r"`groups` a positive int that divides it. Received: x.shape=\[2, 4, 4, 6\], groups=4"):
        group_norm(x, gamma, beta, 4, 1e-6)  # TensorFlow's ops would fail obscurely
    _, mean, rstd = library.kdiff_group_norm(x, gamma, beta, groups=3, epsilon=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"mean and rstd of shape \[2,3\].*received \[2,2\]"):
        library.kdiff_group_norm_grad(x, x, gamma, beta, mean[:, :2], rstd, groups=3, epsilon=1e-6)


def test_switched_off_under_xla_and_for_other_dtypes():
    x, gamma, beta = _case((2, 4, 4, 8), 2)
    norm = lambda x: group_norm(x, gamma, beta, 2, 1e-6)  # noqa: E731
    with kernels.without_fused_kernels():
        assert _fused_ops(norm, x) == []
    assert _fused_ops(norm, x) == ["KdiffGroupNorm"]
    assert _fused_ops(norm, tf.cast(x, tf.float16)) == []
    compiled = tf.function(norm, jit_compile=True)
    np.testing.assert_allclose(compiled(x).numpy(), composed_group_norm(x, gamma, beta, 2, 1e-6).numpy(), atol=1e-5)


def test_the_environment_switch(monkeypatch):
    x, gamma, beta = _case((2, 4, 4, 8), 2)
    monkeypatch.setenv(kernels.ENABLE_VARIABLE, "0")
    assert _fused_ops(lambda x: group_norm(x, gamma, beta, 2, 1e-6), x) == []
    assert all("switched off" in line for line in kernels.status().splitlines())


def test_builds_are_keyed_by_their_source(tmp_path, monkeypatch):
    monkeypatch.setenv(_build.CACHE_VARIABLE, str(tmp_path))
    first, second = tmp_path / "a.cc", tmp_path / "b.cc"
    first.write_text("// one\n")
    second.write_text("// two\n")
    paths = {_build.library_path(str(first)), _build.library_path(str(second))}
    assert len(paths) == 2 and all(p.startswith(str(tmp_path)) for p in paths)
    assert _build.library_path(str(first)) == _build.library_path(str(first))


_FALLBACK = """
import json, warnings
import numpy as np, tensorflow as tf
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from kdiff import kernels
    from kdiff.kernels.convolution import conv2d_3x3
    from kdiff.kernels.normalization import composed_group_norm, group_norm
    x = tf.reshape(tf.range(64, dtype=tf.float32), (1, 4, 4, 4))
    y = group_norm(x, None, None, 2, 1e-6, "silu")
    fine = bool(np.allclose(y.numpy(), composed_group_norm(x, tf.ones([4]), tf.zeros([4]), 2, 1e-6, "silu").numpy()))
    images, kernel = tf.random.normal((1, 4, 4, 128), seed=1), tf.random.normal((3, 3, 128, 128), seed=2)
    fine = fine and bool(np.allclose(conv2d_3x3(images, kernel).numpy(), tf.nn.conv2d(images, kernel, 1, "SAME").numpy()))
print(json.dumps({"equal": fine, "warnings": [str(w.message) for w in caught if "fused" in str(w.message)],
                  "status": kernels.status()}))
"""


@pytest.mark.parametrize("cause, environment, expected", [
    ("no compiler", {"CXX": "/nonexistent/c++"}, "no C++ compiler"),
    ("a failing compiler", {"CXX": "false"}, "compiling {name}.cc failed"),
])
def test_a_failed_build_falls_back_with_one_warning_a_kernel(tmp_path, cause, environment, expected):
    done = subprocess.run(
        [sys.executable, "-c", _FALLBACK], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, **environment, _build.CACHE_VARIABLE: str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["equal"], cause
    assert len(result["warnings"]) == len(kernels.KERNELS), result
    for name, warning, line in zip(kernels.KERNELS, result["warnings"], result["status"].splitlines()):
        assert f"fused {name} kernel" in warning and expected.format(name=name) in warning, result
        assert line.startswith(f"{name}: unavailable") and expected.format(name=name) in line
    assert not any(name.endswith(".so") for name in os.listdir(tmp_path))  # nothing half-built is left


def test_the_build_command_says_where_each_kernel_is():
    done = subprocess.run([sys.executable, "-m", "kdiff.kernels"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and [line.split(":")[0] for line in lines] == list(kernels.KERNELS), done.stdout + done.stderr[-2000:]
    for line in lines:
        assert ": built, " in line and os.path.exists(line.split("built, ", 1)[1].strip()), line
