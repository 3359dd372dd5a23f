"""kdiff.fid's costs on this machine: the Fréchet distance at 2048 dimensions against
pytorch-fid's formula, and ``python -m kdiff.fid A B`` end to end.

    python benchmarks/fid_speed.py [--images 120] [--rounds 3] [--skip_command]

The distance: random 2048-d features, two sets of ``--images`` (singular covariances, as
any set under 2,049 samples has) and two of 4,096 (full rank). Timed on each: pytorch-fid's
``calculate_frechet_distance`` (``scipy.linalg.sqrtm`` of Σ1 Σ2, retried with ε I when not
finite; its lines are repeated here, so no torch is needed) on the statistics;
``kdiff.metrics.frechet_distance`` on the same statistics; ``kdiff.metrics.fid_from_features``
on the features (what ``python -m kdiff.fid`` computes); and, for the small sets, kdiff's
extras ``fid_bootstrap`` (100 rounds) and ``fid_infinity`` (15 subset sizes) — at full rank
each costs its rounds or sizes times one distance. Median of ``--rounds`` calls each; the
code measured is this checkout's.

The command: two folders of ``--images`` random 32×32 PNGs, and pytorch-fid's network with
random weights (``tests/fixtures/fid_inception/random_weights.py``: no download; the speed
does not depend on the values), ``python -m kdiff.fid A B --weights W.npz`` timed as a
subprocess (its start, feature extraction and distance), by default and with
``--bootstrap 100 --fid-infinity``. pytorch-fid's own command on the same folders
(``python -m pytorch_fid A B --device cpu``) needs torch and its weights file; it is not run.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from scipy import linalg

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests", "fixtures", "fid_inception")]

from random_weights import random_state_dict, read_spec  # noqa: E402

from kdiff import metrics  # noqa: E402

DIMS = 2048


def pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid 0.3.0's ``calculate_frechet_distance``, line for line."""
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def median_seconds(fn, rounds):
    """The median wall time of ``rounds`` calls of ``fn``, and its last result."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def distances(n, rounds):
    """Times the distance between two random sets of ``n`` 2048-d features; prints a table."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, DIMS)) * rng.uniform(0.5, 1.5, DIMS)
    b = rng.standard_normal((n, DIMS)) * rng.uniform(0.5, 1.5, DIMS) + 0.1
    stats_a, stats_b = metrics.feature_statistics(a), metrics.feature_statistics(b)
    cases = {
        "pytorch-fid's formula (scipy sqrtm), statistics": lambda: pytorch_fid_distance(*stats_a, *stats_b),
        "kdiff.metrics.frechet_distance, statistics": lambda: metrics.frechet_distance(*stats_a, *stats_b),
        "kdiff.metrics.fid_from_features, features": lambda: metrics.fid_from_features(a, b),
    }
    if n <= DIMS:
        cases["kdiff.metrics.fid_bootstrap, 100 rounds"] = lambda: metrics.fid_bootstrap(a, b, num_rounds=100)["fid"]
        cases["kdiff.metrics.fid_infinity, 15 sizes"] = lambda: metrics.fid_infinity(a, b)["fids"][-1]
    print(f"\nThe distance between two sets of {n} random {DIMS}-d features (median of {rounds}):")
    values = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's sqrtm of a singular product warns
        for name, fn in cases.items():
            seconds, values[name] = median_seconds(fn, rounds)
            print(f"  {name:50s} {seconds:8.2f} s   FID {values[name]:.6f}")
    reference = values["pytorch-fid's formula (scipy sqrtm), statistics"]
    worst = max(abs(v - reference) / reference for v in values.values())
    print(f"  largest difference from pytorch-fid's value: {worst:.1e} relative")


def command(n, rounds):
    """Times ``python -m kdiff.fid A B --weights W`` on two folders of ``n`` random PNGs."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as root:
        weights = os.path.join(root, "weights.npz")
        np.savez(weights, **random_state_dict(read_spec(), 0))
        rng = np.random.default_rng(0)
        folders = []
        for name, shift in (("a", 0), ("b", 40)):
            folder = os.path.join(root, name)
            os.makedirs(folder)
            for i in range(n):
                pixels = np.clip(rng.normal(128 + shift, 50, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{i:04d}.png"))
            folders.append(folder)
        print(f"\npython -m kdiff.fid A B --weights W.npz, two folders of {n} random 32x32 PNGs (median of {rounds}):")
        env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        for extra in ([], ["--bootstrap", "100", "--fid-infinity"]):
            argv = [sys.executable, "-m", "kdiff.fid", *folders, "--weights", weights, "--quiet", *extra]

            def run():
                done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=root)
                if done.returncode:
                    raise RuntimeError(done.stderr[-2000:])
                return done.stdout.splitlines()[0]

            seconds, first_line = median_seconds(run, rounds)
            print(f"  {' '.join(['defaults', *extra]):40s} {seconds:8.1f} s   {first_line}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=120, help="images per set (default 120)")
    parser.add_argument("--rounds", type=int, default=3, help="timed calls of each, median kept (default 3)")
    parser.add_argument("--skip_command", action="store_true", help="time the distance only")
    args = parser.parse_args(argv)
    for n in (args.images, 2 * DIMS):
        distances(n, args.rounds)
    if not args.skip_command:
        command(args.images, args.rounds)


if __name__ == "__main__":
    main()
