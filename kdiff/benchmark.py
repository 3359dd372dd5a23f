"""Speed benchmark: ``python -m kdiff.benchmark``.

Measures, on this machine, in one run:

* the yardsticks: GFLOP/s of one 3×3 ``tf.nn.conv2d`` (16×16×256 → 256, batch 16) and of
  one large ``tf.linalg.matmul`` in float32 and in bfloat16 (``--matmul_size``³), the
  ceilings a network's speed is judged against (read before and after the runs, the
  better reading kept: a host's slow moment must not lower the ceiling);
* sampling with Ho et al.'s CIFAR-10 U-Net (``UNet.ddpm_cifar10``, 35.7M parameters) — DDIM,
  ``--steps`` steps, batch ``--batch`` at 32×32 — in float32 (with kdiff's fused kernels,
  and with TensorFlow's ops only: ``kdiff.kernels``) and with the network in bfloat16
  (``precision="bfloat16"``), as image-steps per second and as a fraction of the peak of
  their dtype (from the network's FLOPs);
* the second ``kdiff.sample`` call's overhead: the share of its time spent outside the
  network's own compute (the traced loop is reused, so it should be small), against the
  same number of forward passes called on their own, the two alternating;
* training: ``train_step`` steps per second for the default pipeline run's ``UNet.small``
  (8×8×1, batch 64) and for ``UNet.ddpm_cifar10`` (32×32×3, batch 16), in float32 and
  under the ``mixed_bfloat16`` policy (float32 weights, Adam state and EMA), timed in
  bursts of ``--train_steps`` steps (a quarter of them for the CIFAR-10 U-Net), and the
  time from ``fit()`` to the end of ``UNet.small``'s first step;
* when ``torch`` and ``diffusers`` are importable (the ``bench`` extra), the same figures
  for diffusers' ``UNet2DModel`` of the same layouts with its ``DDIMScheduler`` and
  ``torch.optim.Adam`` on the same cores: sampling in float32 and with the network cast to
  bfloat16 (the scheduler in float32, as kdiff's), training in float32 and under
  ``torch.autocast("cpu", torch.bfloat16)``. kdiff and PyTorch are timed alternately,
  round after round (sampling calls, training bursts), each figure is the best round, and
  each kdiff figure is compared with PyTorch's of the same precision.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import kdiff  # noqa: E402
from kdiff import kernels  # noqa: E402
from kdiff import schedules  # noqa: E402
from kdiff.models import UNet  # noqa: E402

# diffusers' UNet2DModel configs of the same layouts as kdiff's presets (Ho et al.'s
# CIFAR-10 U-Net is google/ddpm-cifar10-32's config).
DIFFUSERS_CIFAR10 = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, dropout=0.1,
    attention_head_dim=None,
)
DIFFUSERS_SMALL = dict(
    sample_size=8, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, attention_head_dim=None,
)


def _best(fn, rounds):
    """The best wall time of ``rounds`` calls of ``fn`` (after one warm-up call)."""
    fn()
    return _alternating_best({"fn": fn}, rounds)["fn"]


SETTLE_SECONDS = 0.5  # idle time before each timed call: the previous call's threads stop spinning


def _alternating_best(fns, rounds, settle=SETTLE_SECONDS):
    """The best wall time of each of ``fns`` (name → callable) over ``rounds`` rounds, each
    round calling every one of them in turn (so that a slow moment of the host falls on
    all of them alike), after ``settle`` idle seconds (a framework's worker threads keep
    spinning for a while after its call, slowing the next one, whichever framework it is)."""
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(settle)
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def conv_peak(batch=16, size=16, channels=256, rounds=5):
    """GFLOP/s of one 3×3 ``tf.nn.conv2d`` (``batch``×``size``²×``channels`` → ``channels``)."""
    x = tf.random.stateless_normal((batch, size, size, channels), seed=[0, 0])
    kernel = tf.random.stateless_normal((3, 3, channels, channels), seed=[0, 1])
    conv = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))
    seconds = _best(lambda: conv(x, kernel).numpy(), rounds)
    return 2 * batch * size * size * 9 * channels * channels / seconds / 1e9


def matmul_peak(dtype="float32", size=2048, rounds=5):
    """GFLOP/s of one ``size``×``size`` by ``size``×``size`` ``tf.linalg.matmul`` in ``dtype``:
    the CPU's matrix peak for that dtype as TensorFlow reaches it (oneDNN's kernels, with
    AVX-512 BF16 or AMX instructions for bfloat16 where the CPU has them)."""
    a, b = (tf.cast(tf.random.stateless_normal((size, size), seed=[0, i]), dtype) for i in (0, 1))
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, b)[:1], tf.float32)))
    seconds = _best(lambda: matmul(a, b).numpy(), rounds)
    return 2 * size**3 / seconds / 1e9


def network_gflop(network, batch, image_shape):
    """The FLOPs of one forward pass of ``network`` at ``batch``, in GFLOP (TF's profiler).

    Traced with TensorFlow's ops only: the profiler cannot count kdiff's kernels, and the
    figure stays the direct convolution's, the yardstick both frameworks are judged by
    (Winograd's kernel does fewer multiplications for the same result).
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    with kernels.without_fused_kernels():
        concrete = tf.function(lambda x, t: network(x, t)).get_concrete_function(
            tf.TensorSpec((batch, *image_shape)), tf.TensorSpec((batch,), tf.int32)
        )
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # the v1 profiler's deprecation notices
    try:
        return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops / 1e9
    finally:
        logger.setLevel(level)


class _Torch:
    """diffusers / PyTorch on the same cores, or None when they are not installed."""

    def __init__(self):
        import torch
        from diffusers import DDIMScheduler, UNet2DModel

        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(0)
        self.torch, self.UNet2DModel, self.DDIMScheduler = torch, UNet2DModel, DDIMScheduler
        self.version = f"torch {torch.__version__}"

    def unet(self, config):
        torch = self.torch
        torch.manual_seed(0)
        return self.UNet2DModel(**config).eval()

    def ddim(self, unet, batch, steps, bfloat16=False):
        """A DDIM call; with ``bfloat16`` the network runs on a bfloat16 copy of ``unet``
        while the scheduler's state stays float32 (as kdiff's ``precision="bfloat16"``)."""
        torch = self.torch
        scheduler = self.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)
        scheduler.set_timesteps(steps)
        size, channels = unet.config.sample_size, unet.config.in_channels
        x_T = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(0))
        dtype = torch.bfloat16 if bfloat16 else torch.float32
        network = copy.deepcopy(unet).to(dtype) if bfloat16 else unet

        def run():
            with torch.inference_mode():
                x = x_T
                for t in scheduler.timesteps:
                    x = scheduler.step(network(x.to(dtype), t).sample.float(), t, x).prev_sample
            return x

        return run

    def train_step(self, unet, batch, bfloat16=False):
        """One Adam step of the ε loss; with ``bfloat16`` the forward pass and loss run under
        ``torch.autocast("cpu", torch.bfloat16)`` (float32 weights and optimizer)."""
        torch = self.torch
        unet.train()
        optimizer = torch.optim.Adam(unet.parameters(), lr=1e-4)
        betas = torch.linspace(1e-4, 0.02, 1000)
        alpha_bar = torch.cumprod(1 - betas, 0)
        size, channels = unet.config.sample_size, unet.config.in_channels
        x0 = torch.rand(batch, channels, size, size) * 2 - 1

        def step():
            t = torch.randint(0, 1000, (batch,))
            eps = torch.randn_like(x0)
            a = alpha_bar[t].view(-1, 1, 1, 1)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
                prediction = unet(a.sqrt() * x0 + (1 - a).sqrt() * eps, t).sample
            loss = torch.nn.functional.mse_loss(prediction.float(), eps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.item()

        return step

    @staticmethod
    def count(unet):
        return sum(p.numel() for p in unet.parameters())


def _torch_or_none(skip):
    if skip:
        return None
    try:
        return _Torch()
    except (ImportError, RuntimeError) as error:  # diffusers raises RuntimeError for a broken torch stack
        print(f"diffusers / PyTorch not measured: {type(error).__name__}: {str(error).splitlines()[0]}")
        return None


_WARMUP_STEPS = 3  # before any timed burst: tracing, then the kernels' and allocator's set-up


def _kdiff_trainer(build, image_shape, batch, steps, precision="float32", fused=True):
    """kdiff's ``train_step`` (DDPM, simple loss, Adam) of the network ``build(dtype=policy)``
    as a burst of ``steps`` steps (one ``fit()``), after a warm-up ``fit()``; and the seconds
    from that first ``fit()`` to the end of its first step (tracing included).

    Args:
        build: ``build(dtype=...)`` → a kdiff network.
        image_shape, batch, steps: the data's shape, the batch, the burst's steps.
        precision: "float32" or "mixed_bfloat16" (``kdiff.distribute.precision_policy``).
        fused: trace with kdiff's fused kernels (False: TensorFlow's ops only).

    Returns:
        ``(burst, first_step_seconds)``: ``burst()`` runs ``steps`` more steps.
    """
    policy = kdiff.distribute.precision_policy(precision)
    model = kdiff.DDPM(build(dtype=policy), schedules.linear(), dtype=policy)
    model.compile(optimizer=kdiff.optim.FusedAdam(1e-4))  # unclipped, as the PyTorch side
    data = tf.random.stateless_uniform((batch, *image_shape), seed=[1, 2], minval=-1, maxval=1)
    warmup, dataset = (
        kdiff.data.without_autotuning(tf.data.Dataset.from_tensors(data).repeat(n)) for n in (_WARMUP_STEPS, steps)
    )
    marks = {}

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, index, logs=None):
            marks.setdefault("first", time.perf_counter())

    start = time.perf_counter()
    with contextlib.nullcontext() if fused else kernels.without_fused_kernels():  # the train step is traced here
        model.fit(warmup, epochs=1, verbose=0, shuffle=False, callbacks=[Clock()])
    return (lambda: model.fit(dataset, epochs=1, verbose=0, shuffle=False)), marks["first"] - start


def _peer_trainer(peer, config, batch, steps, bfloat16=False):
    """The PyTorch train step of diffusers' ``UNet2DModel(**config)`` as a burst of
    ``steps`` steps, after the same warm-up as kdiff's."""
    step = peer.train_step(peer.unet(config), batch, bfloat16)

    def burst(count=steps):
        for _ in range(count):
            step()

    burst(_WARMUP_STEPS)
    return burst


def _table(title, rows, columns):
    """Prints ``rows`` (name → tuple of cells) under ``columns`` (header names)."""
    print(f"\n{title}")
    print(f"{'':50s}" + "".join(f"{c:>16s}" for c in columns))
    for name, cells in rows.items():
        print(f"{name:50s}" + "".join(f"{c:>16s}" for c in cells))


def _ratio(value, reference):
    return "n/a" if reference is None else f"{value / reference:.2f}x"


def run(argv=None):
    """Runs the benchmark and prints its tables.

    Args:
        argv: command-line arguments (``--batch``, ``--steps``, ``--rounds``,
            ``--train_steps``, ``--matmul_size``, ``--skip_torch``).

    Returns:
        A dict of the figures (name → value; PyTorch's figures are None without it).
    """
    parser = argparse.ArgumentParser(prog="python -m kdiff.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="images per sampling batch (CIFAR-10 U-Net)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each measurement (best kept)")
    parser.add_argument("--train_steps", type=int, default=10,
                        help="UNet.small training steps per timed burst (a quarter for the CIFAR-10 U-Net)")
    parser.add_argument("--matmul_size", type=int, default=2048, help="the size of the peak's square matmul")
    parser.add_argument("--skip_torch", action="store_true", help="do not measure diffusers / PyTorch")
    args = parser.parse_args(argv)
    peer = _torch_or_none(args.skip_torch)
    print(
        f"kdiff {kdiff.__version__}, TF {tf.__version__}, Keras {keras.__version__}"
        + (f", diffusers with {peer.version}" if peer else " (diffusers / torch not installed: kdiff only)")
        + f"; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"devices: {[d.device_type for d in tf.config.list_logical_devices()]}; {kernels.status()}"
    )
    first_peaks = _peaks(args.matmul_size)  # measured again at the end: the better reading is the ceiling
    results, tables = {}, []

    # ---------------------------------------------------------------- sampling
    batch, steps = args.batch, args.steps
    network = UNet.ddpm_cifar10()
    model = kdiff.DDPM(network, schedules.linear(), ema_decay=0.0)
    gflop = network_gflop(network, batch, (32, 32, 3))
    x_T = tf.random.stateless_normal((batch, 32, 32, 3), seed=[0, 0])

    def kdiff_ddim(precision, fused=True):  # kdiff.sample keeps the traced loop: later calls reuse it
        def call():
            with contextlib.nullcontext() if fused else kernels.without_fused_kernels():
                return kdiff.sample(model, batch, sampler="ddim", steps=steps, batch_size=batch, precision=precision)

        return call

    fns = {
        "kdiff float32": kdiff_ddim("float32"),
        "kdiff float32, TensorFlow ops": kdiff_ddim("float32", fused=False),
        "kdiff bfloat16": kdiff_ddim("bfloat16"),
    }
    if peer:
        peer_unet = peer.unet(DIFFUSERS_CIFAR10)
        fns["diffusers float32"] = peer.ddim(peer_unet, batch, steps)
        fns["diffusers bfloat16"] = peer.ddim(peer_unet, batch, steps, bfloat16=True)
    for fn in fns.values():
        fn()  # traces, warms up
    best = _alternating_best(fns, args.rounds)
    rates = {name: batch * steps / seconds for name, seconds in best.items()}
    rows = {}
    for name, rate in rates.items():
        dtype = "bfloat16" if "bfloat16" in name else "float32"
        results[f"sample {name}"] = rate
        rows[name] = (rate, gflop / batch * rate, dtype, _ratio(rate, rates.get(f"diffusers {dtype}")))
    tables.append((
        f"Sampling: UNet.ddpm_cifar10 ({network.count_params():,} parameters, {gflop / batch:.1f} GFLOP per image "
        f"per step), DDIM {steps} steps, batch {batch}, 32x32x3"
        + (f"; diffusers UNet2DModel of the same layout: {peer.count(peer_unet):,} parameters" if peer else ""),
        rows, ("image-steps/s", "of matmul peak", "vs diffusers"),
    ))

    # ------------------------------------------------- second-call overhead
    forward = tf.function(lambda x, t: network(x, t))
    t = tf.fill([batch], 500)

    def network_alone():  # the sampling call's network work: `steps` passes, one after another
        for _ in range(steps):
            out = forward(x_T, t)
        return out.numpy()

    network_alone()
    # The two alternate, each timed as a whole: the same calls' lengths, the same moments.
    paired = _alternating_best({"sample": fns["kdiff float32"], "network": network_alone}, args.rounds)
    second, network_seconds = paired["sample"], paired["network"]  # later calls reuse the traced loop
    overhead = results["second_call_overhead"] = max(0.0, 1.0 - network_seconds / second)
    overhead_line = (
        f"\nSecond kdiff.sample call: {second:.2f} s, of which {network_seconds:.2f} s is the network's "
        f"{steps} forward passes: {100 * overhead:.1f} % outside the network"
    )

    # ---------------------------------------------------------------- training
    cases = (
        ("UNet.small 8x8x1, batch 64", functools.partial(UNet.small, image_size=8, in_channels=1), (8, 8, 1), 64,
         DIFFUSERS_SMALL, args.train_steps),
        ("UNet.ddpm_cifar10 32x32x3, batch 16", UNet.ddpm_cifar10, (32, 32, 3), 16,
         DIFFUSERS_CIFAR10, max(1, args.train_steps // 4)),  # 40 times the small one's step
    )
    rows = {}
    for case, build, shape, train_batch, peer_config, burst_steps in cases:
        bursts = {}
        bursts["kdiff float32"], first = _kdiff_trainer(build, shape, train_batch, burst_steps)
        if "small" in case:
            results["first_step_seconds"] = first
        else:
            bursts["kdiff float32, TensorFlow ops"] = _kdiff_trainer(build, shape, train_batch, burst_steps,
                                                                     fused=False)[0]
        bursts["kdiff mixed_bfloat16"] = _kdiff_trainer(build, shape, train_batch, burst_steps, "mixed_bfloat16")[0]
        if peer:
            bursts["PyTorch float32"] = _peer_trainer(peer, peer_config, train_batch, burst_steps)
            bursts["PyTorch autocast bfloat16"] = _peer_trainer(peer, peer_config, train_batch, burst_steps, True)
        best = _alternating_best(bursts, args.rounds)
        rates = {name: burst_steps / seconds for name, seconds in best.items()}
        case_gflop = 3 * network_gflop(build(), train_batch, shape)  # forward + backward ≈ 3 forward passes
        for name, rate in rates.items():
            dtype = "bfloat16" if "bfloat16" in name else "float32"
            results[f"train {case} {name}"] = rate
            reference = rates.get("PyTorch " + ("autocast bfloat16" if dtype == "bfloat16" else "float32"))
            rows[f"{case.split()[0]} {name}"] = (rate, case_gflop * rate, dtype, _ratio(rate, reference))
    tables.append((
        f"Training (DDPM simple loss, Adam; after {_WARMUP_STEPS} warm-up steps, {args.rounds} bursts each of "
        f"{args.train_steps} steps (UNet.small) and {max(1, args.train_steps // 4)} (CIFAR-10), alternating "
        "kdiff and PyTorch, best burst kept; UNet.small 8x8x1 at batch 64, UNet.ddpm_cifar10 32x32x3 at batch 16)",
        rows, ("steps/s", "of matmul peak", "vs PyTorch"),
    ))

    # ------------------------------------------------------- the yardsticks, and the tables
    peaks = {name: max(value, first_peaks[name]) for name, value in _peaks(args.matmul_size).items()}
    results.update({f"{name}_peak_gflops": value for name, value in peaks.items()})
    print(
        f"Peaks (the better of a reading before and one after the runs): 3x3 convolution (16x16x256 -> 256, batch 16) "
        f"{peaks['conv']:.0f} GFLOP/s; {args.matmul_size}^3 matmul float32 {peaks['float32']:.0f} GFLOP/s, "
        f"bfloat16 {peaks['bfloat16']:.0f} GFLOP/s"
    )
    for index, (title, rows, columns) in enumerate(tables):
        _table(title, {
            name: (f"{rate:.2f}", f"{100 * gflops / peaks[dtype]:.0f}%", ratio)
            for name, (rate, gflops, dtype, ratio) in rows.items()
        }, columns)
        if index == 0:
            print(overhead_line)
    print(f"UNet.small: the first training step ended {results['first_step_seconds']:.1f} s after fit() began")
    return results


def _peaks(matmul_size):
    """The yardsticks: GFLOP/s of the 3×3 convolution ("conv") and of the matmul in float32
    and bfloat16."""
    return {"conv": conv_peak(), **{dtype: matmul_peak(dtype, matmul_size) for dtype in ("float32", "bfloat16")}}


if __name__ == "__main__":
    run()
