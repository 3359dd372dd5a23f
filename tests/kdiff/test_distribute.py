"""tf.distribute: mirrored training equals single-device training; multi-worker completes.

Each run is a fresh process (logical devices and TF_CONFIG must be set before TensorFlow
starts), driven by tests/distributed_run.py.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from paths import REPO, TESTS
from ports import free_ports

import kdiff

SCRIPT = os.path.join(TESTS, "distributed_run.py")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([TESTS, REPO, env.get("PYTHONPATH", "")])
    return env


def _result(output):
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _run(*args, timeout=240):
    done = subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout, env=_env()
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return _result(done.stdout)


def _close(a, b, rtol):
    return all(np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=rtol) for x, y in zip(a, b))


@pytest.mark.slow
def test_mirrored_training_equals_single_device_training():
    single = _run("single")
    mirrored = _run("mirrored")
    assert single["replicas"] == 1 and mirrored["replicas"] == 2
    # Same global batch and seed: the same loss trajectory and weights, within float
    # tolerance (the all-reduce sums in another order).
    np.testing.assert_allclose(mirrored["losses"], single["losses"], rtol=1e-3)
    assert _close(mirrored["weights"], single["weights"], 1e-3)
    assert _close(mirrored["ema"], single["ema"], 1e-3)


@pytest.mark.slow
def test_two_process_multi_worker_training_completes_and_agrees():
    ports = ",".join(str(p) for p in free_ports(2))
    workers = [
        subprocess.Popen(
            [sys.executable, SCRIPT, "multi_worker", str(i), ports],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=240)
            assert worker.returncode == 0, err[-3000:]
            outputs.append(_result(out))
    finally:
        for worker in workers:
            worker.kill()
    first, second = outputs
    assert first["replicas"] == 2
    assert first["losses"] == second["losses"] and len(first["losses"]) == 8
    assert _close(first["weights"], second["weights"], 1e-6)  # the workers stay in sync
    assert np.isfinite(first["losses"]).all()


@pytest.mark.parametrize("name", ["tpu_v9", "", None])
def test_unknown_strategy_name(name):
    with pytest.raises(ValueError, match="strategy"):
        kdiff.distribute.get_strategy(name)


class _Resolver:
    def __init__(self, task_type, task_id, cluster):
        self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

    def cluster_spec(self):
        import tensorflow as tf

        return tf.train.ClusterSpec(self._cluster)


class _Strategy:
    def __init__(self, resolver):
        self.cluster_resolver = resolver


def test_is_chief():
    import tensorflow as tf

    assert kdiff.distribute.is_chief(tf.distribute.get_strategy())  # one process
    workers = {"worker": ["localhost:1", "localhost:2"]}
    assert kdiff.distribute.is_chief(_Strategy(_Resolver("worker", 0, workers)))
    assert not kdiff.distribute.is_chief(_Strategy(_Resolver("worker", 1, workers)))
    with_chief = dict(workers, chief=["localhost:3"])
    assert kdiff.distribute.is_chief(_Strategy(_Resolver("chief", 0, with_chief)))
    assert not kdiff.distribute.is_chief(_Strategy(_Resolver("worker", 0, with_chief)))  # TF's convention
    assert kdiff.distribute.is_chief(_Strategy(_Resolver(None, None, {})))
    assert kdiff.distribute.is_chief_task({}, "worker", 3)  # no cluster: one process


def test_precision_policy_leaves_the_global_policy_alone():
    import keras

    before = keras.config.dtype_policy().name
    policy = kdiff.distribute.precision_policy("mixed_bfloat16")
    assert isinstance(policy, keras.DTypePolicy)
    assert (policy.compute_dtype, policy.variable_dtype) == ("bfloat16", "float32")
    assert keras.config.dtype_policy().name == before
    dense = keras.layers.Dense(2, dtype=policy)
    assert dense.compute_dtype == "bfloat16"
    with pytest.raises(ValueError, match="precision"):
        kdiff.distribute.precision_policy("float8")


@pytest.mark.parametrize("flags, native", [
    ("fpu avx512f avx512_vnni avx512_bf16 avx_vnni", True),  # AVX-512 BF16 (Zen 4/5, Cooper Lake)
    ("fpu avx512f amx_bf16 amx_tile amx_int8", True),  # AMX (Sapphire Rapids)
    ("fpu avx2 fma avx512f avx512_vnni", False),
])
def test_native_bfloat16_reads_the_cpus_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert kdiff.distribute.native_bfloat16(str(cpuinfo)) is native
    assert kdiff.distribute.native_bfloat16(str(tmp_path / "missing")) is False


def test_the_default_precision_follows_the_cpu(monkeypatch):
    """mixed_bfloat16 only where the CPU computes bfloat16 natively and no accelerator is
    visible; the pipeline's --precision=auto (its default) resolves to it."""
    from pipeline import config

    for native, expected in ((True, "mixed_bfloat16"), (False, "float32")):
        monkeypatch.setattr(kdiff.distribute, "native_bfloat16", lambda native=native: native)
        assert kdiff.distribute.default_precision() == expected
        assert config._precision("auto", "precision") == expected  # the field's check
    assert config._precision("float32", "precision") == "float32"
    with pytest.raises(ValueError, match="auto"):
        config._precision("half", "precision")


def test_training_policies_and_sampling_precisions_have_their_own_names():
    """``distribute.POLICIES`` (dtype policies to train in) and ``draw.SAMPLING_PRECISIONS``
    (what a network samples in); ``distribute.PRECISIONS`` is the first's old name, warning."""
    from kdiff.samplers import draw

    assert kdiff.distribute.POLICIES == ("float32", "mixed_float16", "mixed_bfloat16")
    assert draw.SAMPLING_PRECISIONS == ("float32", "bfloat16")
    with pytest.warns(DeprecationWarning, match=r"kdiff\.distribute\.POLICIES"):
        assert kdiff.distribute.PRECISIONS is kdiff.distribute.POLICIES
    with pytest.raises(AttributeError, match="NO_SUCH_NAME"):
        kdiff.distribute.NO_SUCH_NAME
