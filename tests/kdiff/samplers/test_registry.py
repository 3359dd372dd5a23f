"""The sampler registry: one table that kdiff.sample, model.generate, the export's generate,
the CLI and the pipeline's sample stage all read (the process interface: tests/kdiff/test_process.py)."""

import ast
import os

import numpy as np
import pytest
import tensorflow as tf
from paths import REPO
from tiny_network import TinyNet

import kdiff
from kdiff import schedules
from kdiff.samplers import registry
from kdiff import sde as sde_lib
from kdiff.cli import main as cli_main
from pipeline import config
from pipeline.stages import sample as sample_stage


def toy(eps_fn, x_T, schedule, steps=3, *, scale=1.0, seed=None, noise_fn=None, return_trajectory=False,
        compiled=True, jit_compile="auto"):
    """A toy sampler: x ← x − scale·ε(x, T−1−i)/steps, ``steps`` times. ``steps`` may be a
    graph tensor (an export's runtime input), so it is written with tf.while_loop."""
    x = tf.convert_to_tensor(x_T)
    n = tf.cast(steps, tf.int32)

    def body(i, x):
        t = tf.fill([tf.shape(x)[0]], schedule.T - 1 - i)
        return i + 1, x - scale * tf.cast(eps_fn(x, t), x.dtype) / tf.cast(n, x.dtype)

    _, x = tf.while_loop(lambda i, x: i < n, body, (tf.constant(0), x))
    return (x, [x_T, x]) if return_trajectory else x


TOY = registry.Sampler("toy", toy, processes=("schedule",), default_steps=3, description="a test sampler")


def _start_noise(seed, shape):
    """kdiff.sample's first batch's start noise: fold_in(fold_in([seed, 0], 0), 0), int64 data."""
    fold = tf.random.experimental.stateless_fold_in
    batch_seed = fold(tf.constant([seed, 0], tf.int64), tf.constant(0, tf.int64))
    return tf.random.stateless_normal(shape, fold(batch_seed, tf.constant(0, tf.int64)))


def _toy_by_hand(model, n, seed, steps, scale=1.0):
    """What the toy sampler must give, computed here from the documented seeding."""
    x = _start_noise(seed, (n, 8, 8, 1))
    eps_fn = model.model_fn(ema=True)
    for i in range(steps):
        x = x - scale * eps_fn(x, tf.fill([n], model.process.T - 1 - i)) / steps
    return kdiff.sampling.to_uint8(x, model.data_range)


@pytest.fixture(scope="session")
def ddpm():
    return kdiff.DDPM(TinyNet(), schedules.linear(T=20), seed=0)


def test_a_registered_sampler_reaches_sample_generate_export_cli_and_pipeline(ddpm, tmp_path, capsys):
    with registry.registered(TOY):
        # kdiff.sample and model.generate
        images = kdiff.sample(ddpm, 4, sampler="toy", seed=1, scale=0.5)
        np.testing.assert_array_equal(images, _toy_by_hand(ddpm, 4, 1, 3, scale=0.5))
        np.testing.assert_array_equal(ddpm.generate(4, sampler="toy", seed=1, scale=0.5), images)
        # generate of a fresh export: the library's function traced with a tensor `steps`
        path = ddpm.export(tmp_path / "model" / "export", sampler="toy", sampler_options={"scale": 0.5})
        exported = kdiff.export.load(path)
        assert exported.config["generate"] == {
            "sampler": "toy", "sampler_options": {"scale": 0.5}, "default_steps": 3, "max_steps": 20,
        }
        np.testing.assert_array_equal(exported.generate(4, seed=1), images)
        np.testing.assert_array_equal(exported.generate(4, seed=1, steps=5), _toy_by_hand(ddpm, 4, 1, 5, scale=0.5))
        # the CLI lists it and runs it on the export
        grid = tmp_path / "grid.png"
        assert cli_main(["sample", "--model", path, "--sampler", "toy", "--num", "2", "--out", str(grid)]) == 0
        assert grid.exists()
        # the pipeline's sample stage
        params = config.preset("tiny").section(sample_stage.SPEC.parameters)
        params.update(samplers={"toy_2": {"sampler": "toy", "steps": 2}}, num_samples=4, sample_shards=2,
                      beam_args=["--runner=DirectRunner"])
        out = tmp_path / "samples"
        sample_stage.Executor().Do({"model": str(tmp_path / "model")}, {"samples": str(out)}, params)
        with np.load(out / "toy_2" / "samples.npz") as data:
            assert data["images"].shape == (4, 8, 8, 1)
    assert "toy" not in registry.names()
    with pytest.raises(ValueError, match="toy"):
        kdiff.sample(ddpm, 2, sampler="toy")


def test_unknown_sampler_options_name_the_option_and_the_accepted_ones(ddpm):
    with pytest.raises(ValueError, match=r"among \['clip_x0', 'clipped_eps', 'eta', 'final_alpha_one', 'grid', 'spacing', 'steps_offset'\].*temperature"):
        kdiff.sample(ddpm, 2, sampler="ddim", steps=2, temperature=0.7)
    with pytest.raises(ValueError, match="did you mean 'snr'"):
        kdiff.sample(kdiff.ScoreSDE(TinyNet(), sde_lib.VESDE(N=10)), 2, sampler="predictor_corrector", snrr=0.1)
    with pytest.raises(ValueError, match="did you mean 'ddim'"):
        kdiff.sample(ddpm, 2, sampler="dim")


def test_user_facing_sampling_clips_x0_to_the_data_range_and_none_turns_it_off(ddpm):
    far = lambda x, t: -100.0 * tf.ones_like(x)  # ε that puts x̂0 far outside [−1, 1]  # noqa: E731
    process = ddpm.process
    default = kdiff.sample(far, 3, steps=4, seed=2, schedule=process, image_shape=(8, 8, 1), clip_x0=None, batch_size=3)
    x_T = _start_noise(2, (3, 8, 8, 1))
    raw = kdiff.samplers.ddim(far, x_T, process, steps=4)
    clipped = kdiff.samplers.ddim(far, x_T, process, steps=4, clip_x0=1.0)
    np.testing.assert_array_equal(default, kdiff.sampling.to_uint8(raw))
    np.testing.assert_array_equal(
        kdiff.sample(far, 3, steps=4, seed=2, schedule=process, image_shape=(8, 8, 1), batch_size=3),
        kdiff.sampling.to_uint8(clipped),
    )
    assert not np.allclose(raw, clipped)
    # a (low, high) pair clips to that range: ddim's last step returns x̂0 itself
    pair = kdiff.samplers.ddim(far, x_T, process, steps=4, clip_x0=(0.0, 0.5))
    assert float(tf.reduce_min(pair)) >= 0.0 and float(tf.reduce_max(pair)) <= 0.5


def test_registry_entries_read_their_options_from_the_function():
    ddim = registry.get("ddim")
    assert ddim.options() == {"eta": 0.0, "clip_x0": None, "clipped_eps": True, "spacing": "leading", "steps_offset": 0,
                              "final_alpha_one": True, "grid": None}
    pc = registry.get("predictor_corrector").options()
    assert pc["snr"] == 0.16 and pc["n_corrector"] == 1 and "steps" not in pc and "seed" not in pc
    assert registry.get("annealed_langevin").steps_arg == "n_steps_each"
    assert registry.names("sigmas") == ["annealed_langevin", "heun", "euler", "euler_ancestral"]
    assert set(registry.names("sde")) == {"euler_maruyama", "predictor_corrector", "probability_flow",
                                          "dpm_solver", "heun", "euler", "euler_ancestral"}
    flow = registry.get("probability_flow")
    assert flow.runs_in_graph({"method": "rk4"}) and not flow.runs_in_graph({"method": "RK45"})
    with pytest.raises(ValueError, match="processes"):
        registry.Sampler("bad", toy, processes=("schedules",))
    with pytest.raises(ValueError, match="registered"):
        registry.register(registry.Sampler("ddim", toy, ("schedule",)))


def test_runtime_steps_give_the_tables_of_python_steps():
    """The export's one traced loop serves every number of steps: the tables a tensor `steps`
    builds in the graph are those a Python int builds eagerly."""
    schedule = schedules.linear(T=50)
    eps_fn = lambda x, t: 0.1 * x + tf.cast(t, x.dtype)[:, None] / 100.0  # noqa: E731
    x_T = tf.random.stateless_normal((3, 4), [1, 2])

    @tf.function
    def with_tensor(steps, sampler):
        return sampler(steps)

    for name, run in {
        "ddim": lambda s: kdiff.samplers.ddim(eps_fn, x_T, schedule, steps=s, eta=0.5, seed=3),
        "ddpm": lambda s: kdiff.samplers.ddpm(eps_fn, x_T, schedule, steps=s, seed=3),
        "pc": lambda s: kdiff.samplers.predictor_corrector(
            lambda x, t: -x, x_T, sde_lib.VPSDE(N=50), s, seed=3),
        "langevin": lambda s: kdiff.samplers.annealed_langevin(
            lambda x, s_: -x / s_[:, None] ** 2, x_T, [1.0, 0.5, 0.1], n_steps_each=s, seed=3),
    }.items():
        for steps in (1, 7, 25):
            np.testing.assert_allclose(
                with_tensor(tf.constant(steps), run).numpy(), run(steps).numpy(), rtol=2e-5, atol=2e-6, err_msg=name,
            )


def _imports(path):
    """The absolute module names ``path`` imports, at any depth of the file (lazy imports too)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_import_cycles_in_kdiff_or_pipeline():
    """No cycle among the modules of kdiff/ and pipeline/ (function-level imports count too).
    Package __init__ files, which only re-export, are left out of the graph."""
    graph = {}
    for package in ("kdiff", "pipeline"):
        for root, _, files in os.walk(os.path.join(REPO, package)):
            for name in files:
                if name.endswith(".py") and name != "__init__.py":
                    path = os.path.join(root, name)
                    graph[os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")] = _imports(path)
    edges = {module: sorted(set(imported) & set(graph) - {module}) for module, imported in graph.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in edges[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles
    assert "kdiff.sampling" in edges["kdiff.export"] or "kdiff.export" in edges["kdiff.sampling"]  # the graph is real
