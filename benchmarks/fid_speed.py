"""kdiff.fid's costs on this machine: the Fréchet distance at 2048 dimensions against
pytorch-fid's formula, and ``python -m kdiff.fid A B`` end to end, optionally against
pytorch-fid's own command.

    python benchmarks/fid_speed.py [--images 120] [--rounds 3] [--skip_command | --skip_distance]
                                   [--pytorch_fid PYTHON]

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
``--bootstrap 100 --fid-infinity``. ``--skip_distance`` times the command only.

With ``--pytorch_fid PYTHON`` (an interpreter with torch and pytorch-fid), pytorch-fid's own
command ``PYTHON -m pytorch_fid A B --device cpu --num-workers 0`` (images read in its own
process, as kdiff.fid reads them) is timed too, on the same folders and the same weights:
they are written as a torch checkpoint where torch hub's cache holds pytorch-fid's download
(``$TORCH_HOME/hub/checkpoints/`` under a temporary ``TORCH_HOME``), so it loads them instead
of downloading. The commands take turns, one call each per round for ``--rounds`` rounds, so
a change in the machine's load falls on all of them; each one's median and best are
printed, and kdiff's (defaults: FID and KID) over pytorch-fid's (FID). The two FIDs must
agree to 1e-3 relative — the proof that both computed the same thing — or the script fails.

Every command runs with as many threads as this process may use cores
(``os.sched_getaffinity``), set through OMP_NUM_THREADS (torch's intra-op pool),
OPENBLAS_NUM_THREADS / MKL_NUM_THREADS (numpy's and scipy's BLAS) and
TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS (TensorFlow's pools).

    python benchmarks/fid_speed.py --skip_distance --pytorch_fid /path/to/venv/bin/python
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


def timed(fn):
    """The wall time of one call of ``fn``, in seconds, and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median_seconds(fn, rounds):
    """The median wall time of ``rounds`` calls of ``fn``, and its last result."""
    times = []
    for _ in range(rounds):
        seconds, result = timed(fn)
        times.append(seconds)
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


def thread_env(threads):
    """The environment variables that allow a process ``threads`` threads in each pool it uses.

    OpenMP's is torch's intra-op pool; OpenBLAS's and MKL's are numpy's and scipy's; the two
    TF_ ones are TensorFlow's intra- and inter-op pools.
    """
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
    return {name: str(threads) for name in names}


def run(argv, env, cwd):
    """Runs ``argv`` to its end; returns its stdout.

    Raises:
        RuntimeError: the command failed (the end of its stderr is the message).
    """
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return done.stdout


def printed_fid(stdout):
    """The value of the line ``FID: value`` that both kdiff.fid and pytorch-fid print."""
    for line in stdout.splitlines():
        if line.startswith("FID:"):
            return float(line.split(":", 1)[1])
    raise RuntimeError(f"Expected a line 'FID: value' in the command's output. Received:\n{stdout[-2000:]}")


def random_folders(root, n):
    """Writes two folders of ``n`` random 32×32 RGB PNGs under ``root``, the second brighter."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folders = []
    for name, shift in (("a", 0), ("b", 40)):
        folder = os.path.join(root, name)
        os.makedirs(folder)
        for i in range(n):
            pixels = np.clip(rng.normal(128 + shift, 50, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:04d}.png"))
        folders.append(folder)
    return folders


# Run by the interpreter with torch: the .npz state dict (argv[1]) saved as a torch
# checkpoint where torch hub looks for pytorch-fid's weights, under $TORCH_HOME.
_WRITE_CHECKPOINT = """
import os, sys, urllib.parse
import numpy as np, torch, pytorch_fid
from pytorch_fid.inception import FID_WEIGHTS_URL
arrays = np.load(sys.argv[1])
name = os.path.basename(urllib.parse.urlparse(FID_WEIGHTS_URL).path)
target = os.path.join(torch.hub.get_dir(), "checkpoints", name)
os.makedirs(os.path.dirname(target), exist_ok=True)
torch.save({key: torch.from_numpy(arrays[key]) for key in arrays.files}, target)
print(f"torch {torch.__version__}, pytorch-fid {pytorch_fid.__version__}")
"""


def pytorch_fid_command(python, weights, folders, env, root):
    """pytorch-fid's own command on ``folders``, set up to load ``weights`` instead of downloading.

    Args:
        python: an interpreter with torch and pytorch-fid.
        weights: the .npz state dict of pytorch-fid's network (``random_state_dict``).
        folders: the two image folders.
        env: the environment the command runs in (its threads).
        root: a scratch directory; the checkpoint goes to ``root/torch_home``.

    Returns:
        ``(argv, env, versions)``: the command, its environment (``env`` with TORCH_HOME
        set), and the versions of torch and pytorch-fid it runs.
    """
    env = {**env, "TORCH_HOME": os.path.join(root, "torch_home")}
    versions = run([python, "-c", _WRITE_CHECKPOINT, weights], env, root).strip()
    argv = [python, "-m", "pytorch_fid", *folders, "--device", "cpu", "--num-workers", "0"]
    return argv, env, versions


def times_in_turn(commands, rounds, cwd):
    """Runs each command once per round, in turn, for ``rounds`` rounds.

    Args:
        commands: name → ``(argv, env)``.
        rounds: how many calls of each.
        cwd: the directory they run in.

    Returns:
        ``(times, fids)``: name → its wall times in seconds, and name → the FID it printed.
    """
    times = {name: [] for name in commands}
    fids = {}
    for _ in range(rounds):
        for name, (argv, env) in commands.items():
            seconds, stdout = timed(lambda: run(argv, env, cwd))
            times[name].append(seconds)
            fids[name] = printed_fid(stdout)
    return times, fids


def command(n, rounds, pytorch_fid=None):
    """Times ``python -m kdiff.fid A B --weights W`` on two folders of ``n`` random PNGs; prints a table.

    Args:
        n: images per folder.
        rounds: calls of each command.
        pytorch_fid: an interpreter with torch and pytorch-fid, or None. Given, pytorch-fid's
            command on the same folders and weights takes turns with kdiff's, and kdiff's time
            over its is printed.

    Raises:
        RuntimeError: a command failed, or kdiff's FID and pytorch-fid's differ by over 1e-3
            relative.
    """
    threads = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as root:
        weights = os.path.join(root, "weights.npz")
        np.savez(weights, **random_state_dict(read_spec(), 0))
        folders = random_folders(root, n)
        env = {**os.environ, **thread_env(threads)}
        kdiff_env = {**env, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        kdiff_fid = [sys.executable, "-m", "kdiff.fid", *folders, "--weights", weights, "--quiet"]
        extras = ["--bootstrap", "100", "--fid-infinity"]
        ours, theirs = "kdiff.fid, defaults", "pytorch-fid"
        commands = {ours: (kdiff_fid, kdiff_env), "kdiff.fid " + " ".join(extras): (kdiff_fid + extras, kdiff_env)}
        if pytorch_fid:
            argv, torch_env, versions = pytorch_fid_command(pytorch_fid, weights, folders, env, root)
            commands[theirs] = (argv, torch_env)

        print(
            f"\nThe FID command on two folders of {n} random 32x32 PNGs, {rounds} round(s) of one call each in turn, "
            f"every process allowed {threads} threads:"
        )
        times, fids = times_in_turn(commands, rounds, root)
        for name, seconds in times.items():
            median, best = statistics.median(seconds), min(seconds)
            print(f"  {name:45s} median {median:7.1f} s   best {best:7.1f} s   FID {fids[name]:.6g}")
        if not pytorch_fid:
            return
        print(f"  pytorch-fid ({versions}) ran as: PYTHON {' '.join(argv[1:])}")
        for label, pick in (("median", statistics.median), ("best", min)):
            print(f"  kdiff.fid / pytorch-fid, {label}: {pick(times[ours]) / pick(times[theirs]):.2f}")
        difference = abs(fids[ours] - fids[theirs]) / abs(fids[theirs])
        print(f"  FID: kdiff.fid {fids[ours]:.6g}, pytorch-fid {fids[theirs]:.9g} ({difference:.1e} relative)")
        if difference > 1e-3:
            raise RuntimeError(
                f"kdiff.fid's FID {fids[ours]} and pytorch-fid's {fids[theirs]} differ by over 1e-3 relative"
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=120, help="images per set (default 120)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed calls of each; median kept, and best for the commands (default 3)"
    )
    parser.add_argument("--skip_command", action="store_true", help="time the distance only")
    parser.add_argument("--skip_distance", action="store_true", help="time the command only")
    parser.add_argument(
        "--pytorch_fid", metavar="PYTHON", help="an interpreter with torch and pytorch-fid: time its command too"
    )
    args = parser.parse_args(argv)
    if args.skip_command and args.skip_distance:
        parser.error("--skip_command and --skip_distance: expected at most one. Received: both")
    if args.skip_command and args.pytorch_fid:
        parser.error("--pytorch_fid times the command, which --skip_command skips. Received: both")
    if not args.skip_distance:
        for n in (args.images, 2 * DIMS):
            distances(n, args.rounds)
    if not args.skip_command:
        command(args.images, args.rounds, args.pytorch_fid)


if __name__ == "__main__":
    main()
