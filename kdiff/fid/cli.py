"""``python -m kdiff.fid PATH_A PATH_B``: FID as pytorch-fid computes it, and more.

pytorch-fid's command and flags (``--batch-size``, ``--dims``, ``--save-stats``), plus
``--weights FILE`` (a local copy of pytorch-fid's weight file), ``--features`` (the
feature space: ``fid_inception`` — pytorch-fid's network, the default —, ``inception`` —
Keras' ImageNet InceptionV3 —, ``classifier`` — a ``.keras`` classifier with a
"penultimate" layer, ``--classifier FILE`` — or ``inception_graph`` — the 2015 frozen graph,
``--inception-graph FILE``) and ``--resize clean`` (clean-fid's resize).

Each path is a folder of images (pytorch-fid's extensions, not recursive; read as RGB as
pytorch-fid reads them), an ``.npz`` of images (``images``: uint8 ``[N, H, W, C]``, as
``kdiff sample`` and the pipeline write them, or a single array), or an ``.npz`` of
statistics (``mu``, ``sigma``: pytorch-fid's format, what ``--save-stats`` writes).

Printed: FID (the one matrix computation pytorch-fid makes, made without its general
matrix square root: ``kdiff.metrics.frechet_distance``); KID with its spread over subsets
(n/a when every subset is the whole of both sets) and its jackknife standard error when both
sides are images; both sample counts; the feature space; and a warning below 2,048
samples. Asked for, with the features of PATH_A (the samples): ``--fid-infinity``, FID∞
(Chong & Forsyth's extrapolation to infinitely many samples, one FID per subset size;
marked unsupported below 10 samples per feature dimension,
``kdiff.metrics.fid_infinity_min_samples``), and ``--bootstrap N``, a bootstrap confidence
interval of N rounds (one FID each). ``--json FILE`` writes the same as JSON.

Exit status: 0, or 2 for bad input (a missing or empty folder, an unreadable image — named —,
a statistics file of the wrong shape, fewer than 2 images), with nothing written. Default
weights that cannot be downloaded (offline: pytorch-fid's for ``fid_inception``, Keras'
ImageNet ones for ``inception``) exit 2 too, with one line saying what to do instead:
``--weights FILE``, ``$KDIFF_FID_WEIGHTS``, or a feature space read from local files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

# pytorch-fid's IMAGE_EXTENSIONS.
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")
FEATURES = ("fid_inception", "inception", "classifier", "inception_graph")
RELIABLE_SAMPLES = 2048  # pytorch-fid's advice: at least as many samples as feature dimensions


class InputError(ValueError):
    """Bad input on the command line: exit status 2, with the message."""


@dataclasses.dataclass
class Side:
    """One path's contribution: features, or only statistics.

    Attributes:
        path: the path as given.
        count: images read (for statistics: the file's ``num_images`` when saved by kdiff).
        features: float64 ``[N, D]``, or None for a statistics file.
        mu, sigma: the mean and covariance.
    """

    path: str
    count: int | None
    features: np.ndarray | None
    mu: np.ndarray
    sigma: np.ndarray


def build_parser():
    """The command's argparse parser (pytorch-fid's flags first)."""
    parser = argparse.ArgumentParser(
        prog="python -m kdiff.fid",
        description="FID between two image sets (folders, .npz of images or .npz of statistics), "
        "with pytorch-fid's network in Keras; also FID∞, a bootstrap interval and KID.",
    )
    parser.add_argument("path", nargs=2, help="two folders of images, .npz of images or .npz of mu/sigma")
    parser.add_argument("--batch-size", type=int, default=50, help="images per forward pass (default 50)")
    parser.add_argument(
        "--dims", type=int, default=None,
        help="feature dimensions; with fid_inception only 2048 (pool3) is available (default: the network's)",
    )
    parser.add_argument(
        "--save-stats", action="store_true",
        help="write the statistics (mu, sigma) of the first path to the second path (an .npz) and stop",
    )
    parser.add_argument(
        "--weights", default=None,
        help="pytorch-fid's weight file (.pth, read with torch) or its .npz conversion; default: torch hub's "
        "cached pt_inception-2015-12-05-6726825d.pth, $KDIFF_FID_WEIGHTS, or a download",
    )
    parser.add_argument("--features", choices=FEATURES, default="fid_inception", help="the feature space")
    parser.add_argument("--classifier", default=None, help="the .keras classifier for --features classifier")
    parser.add_argument("--inception-graph", default=None, help="classify_image_graph_def.pb for inception_graph")
    parser.add_argument(
        "--resize", choices=("pytorch_fid", "clean"), default="pytorch_fid",
        help="fid_inception's resize: pytorch-fid's bilinear (default) or clean-fid's PIL bicubic",
    )
    parser.add_argument(
        "--bootstrap", type=int, default=0, metavar="N",
        help="also a 95%% bootstrap interval of FID from N rounds (e.g. 100; default 0: none)",
    )
    parser.add_argument(
        "--fid-infinity", action="store_true", help="also FID∞, extrapolated to infinitely many samples (Chong & Forsyth)"
    )
    parser.add_argument(
        "--fid-inf-points", type=int, default=None, metavar="N",
        help="subset sizes in FID∞'s fit (implies --fid-infinity; default: kdiff.metrics.fid_infinity's; 0: no FID∞)",
    )
    parser.add_argument("--kid-subsets", type=int, default=100, help="KID's random subsets")
    parser.add_argument("--kid-subset-size", type=int, default=1000, help="KID's subset size")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsets and resampling")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def check_extras(args):
    """``--bootstrap`` and ``--fid-inf-points``: 0 (none) or at least 2.

    Raises:
        InputError: naming the flag.
    """
    for flag, value in (("--bootstrap", args.bootstrap), ("--fid-inf-points", args.fid_inf_points)):
        if value is not None and value != 0 and value < 2:
            raise InputError(f"{flag}: expected 0 (none) or an integer >= 2. Received: {value}")


def fid_infinity_options(args):
    """What ``--fid-infinity`` and ``--fid-inf-points`` ask for.

    Returns:
        None for no FID∞, else the keyword arguments of ``kdiff.metrics.fid_infinity``
        (``num_points`` only where ``--fid-inf-points`` sets it).
    """
    points = args.fid_inf_points
    if points == 0 or (points is None and not args.fid_infinity):
        return None
    return {} if points is None else {"num_points": points}


def extractor_spec(args):
    """The ``kdiff.fid.extractors`` spec the flags describe.

    Raises:
        InputError: a flag the feature space needs is missing, or ``--dims`` does not fit.
    """
    if args.batch_size < 1:
        raise InputError(f"--batch-size: expected an integer >= 1. Received: {args.batch_size}")
    spec = {"batch_size": args.batch_size}
    if args.features == "fid_inception":
        if args.dims not in (None, 2048):
            raise InputError(
                f"--dims: kdiff's FID Inception gives pool3's 2048 dimensions (pytorch-fid's default); "
                f"its 64/192/768 blocks are not available. Received: --dims {args.dims}"
            )
        if args.weights is not None and not os.path.isfile(args.weights):
            raise InputError(f"--weights: expected a weight file. Received: {args.weights} (no such file)")
        spec.update(kind="fid_inception", weights=args.weights, resize=args.resize)
    elif args.features == "inception":
        spec.update(kind="inception_v3", weights=args.weights or "imagenet")
    elif args.features == "classifier":
        if not args.classifier or not os.path.isfile(args.classifier):
            raise InputError(
                f"--classifier: --features classifier needs a .keras classifier file. Received: {args.classifier}"
            )
        spec.update(kind="classifier", path=args.classifier)
    else:
        if not args.inception_graph or not os.path.isfile(args.inception_graph):
            raise InputError(
                "--inception-graph: --features inception_graph needs classify_image_graph_def.pb. "
                f"Received: {args.inception_graph}"
            )
        spec.update(kind="inception_graph", path=args.inception_graph)
    return spec


# The feature spaces that read only local files: what to use where nothing downloads.
LOCAL_FEATURES = (
    "--features classifier --classifier FILE.keras, or --features inception_graph "
    "--inception-graph classify_image_graph_def.pb"
)


def offline_hint(features):
    """The way forward when a feature space's default weights cannot be downloaded.

    Args:
        features: the ``--features`` value ("fid_inception" or "inception").

    Returns:
        One sentence naming the flags, the environment variable and the other feature
        spaces that work offline.
    """
    from kdiff.fid import weights as weights_lib

    if features == "fid_inception":
        return (
            f"Offline: pass --weights FILE ({weights_lib.FID_WEIGHTS_FILENAME}, read with torch, or its .npz "
            f"from `python -m kdiff.fid.weights convert`), set ${weights_lib.WEIGHTS_ENV}=FILE or put the file at "
            f"{weights_lib.default_weights_path()}; or use a feature space read from local files: {LOCAL_FEATURES}"
        )
    from kdiff.fid import extractors

    return (
        f"Offline: pass --weights FILE (Keras' {os.path.basename(extractors.IMAGENET_NOTOP_URL)}); or use a "
        f"feature space read from local files: --features fid_inception --weights "
        f"{weights_lib.FID_WEIGHTS_FILENAME} (or its .npz), {LOCAL_FEATURES}"
    )


def _fetch_default_weights(spec):
    """The spec's default weights as a local file path (downloaded when not cached), or None.

    Args:
        spec: what :func:`extractor_spec` returned.

    Returns:
        The local path of pytorch-fid's weights (``fid_inception`` without ``--weights``) or
        of Keras' ImageNet weights (``inception`` without ``--weights``); None otherwise.

    Raises:
        OSError: the download failed; FileNotFoundError: ``$KDIFF_FID_WEIGHTS`` names no file.
    """
    from kdiff.fid import extractors
    from kdiff.fid import weights as weights_lib

    if spec["kind"] == "fid_inception" and spec.get("weights") is None:
        try:
            return weights_lib.fetch_weights()
        except FileNotFoundError:
            raise
        except OSError as error:  # fetch_weights' own message names the by-hand fix; say it once, below
            raise OSError(
                f"could not download pytorch-fid's Inception weights from {weights_lib.FID_WEIGHTS_URL} "
                f"({error.__cause__ or error})"
            ) from None
    if spec["kind"] == "inception_v3" and spec.get("weights") == "imagenet":
        return extractors.resolve_inception_weights("imagenet")
    return None


def local_spec(spec, features):
    """``spec`` with its default weights fetched to a local file, before the network is built.

    Args:
        spec: what :func:`extractor_spec` returned.
        features: the ``--features`` value, for messages.

    Returns:
        The spec, its ``weights`` a local path where they were a download (``source``
        keeping "imagenet" for Keras' weights); unchanged otherwise.

    Raises:
        InputError: the download failed (offline): one line with the way forward.
    """
    try:
        path = _fetch_default_weights(spec)
    except FileNotFoundError as error:
        raise InputError(f"--features {features}: {error}") from None
    except OSError as error:
        raise InputError(f"--features {features}: {error}. {offline_hint(features)}") from None
    if path is None:
        return spec
    extra = {"source": "imagenet"} if spec["kind"] == "inception_v3" else {}
    return {**spec, "weights": path, **extra}


def list_images(folder):
    """The image files directly in ``folder`` (pytorch-fid's extensions), sorted.

    Raises:
        InputError: no such folder, or no images in it.
    """
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: expected a folder of images, an .npz of images or an .npz of mu/sigma")
    files = sorted(
        os.path.join(folder, name) for name in os.listdir(folder)
        if not name.startswith(".") and name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS
        and os.path.isfile(os.path.join(folder, name))
    )
    if not files:
        raise InputError(f"{folder}: expected images ({', '.join(IMAGE_EXTENSIONS)}). Received: none")
    return files


def read_image(path):
    """A uint8 RGB array of one image file, read as pytorch-fid reads it (``convert('RGB')``).

    Raises:
        InputError: the file is not a readable image (naming it).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise InputError(f"{path}: not a readable image ({error})") from None


def read_npz(path):
    """``("stats", (mu, sigma, count))`` or ``("images", uint8 array)`` from an .npz file.

    Raises:
        InputError: an unreadable file, statistics of inconsistent shapes, or no images.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable .npz file ({error})") from None
    if "mu" in arrays or "sigma" in arrays:
        mu, sigma = arrays.get("mu"), arrays.get("sigma")
        if mu is None or sigma is None or mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise InputError(
                f"{path}: expected statistics mu [D] and sigma [D, D]. Received: "
                f"mu {None if mu is None else mu.shape}, sigma {None if sigma is None else sigma.shape}"
            )
        count = int(arrays["num_images"]) if "num_images" in arrays else None
        return "stats", (mu.astype(np.float64), sigma.astype(np.float64), count)
    images = arrays.get("images")
    if images is None and len(arrays) == 1:
        images = next(iter(arrays.values()))
    if images is None or images.ndim not in (3, 4):
        raise InputError(
            f"{path}: expected 'images' [N, H, W, C] (or 'mu' and 'sigma'). Received: keys {sorted(arrays)}"
        )
    if images.dtype != np.uint8:
        if images.dtype.kind != "f" or images.min() < 0 or images.max() > 255:
            raise InputError(f"{path}: expected uint8 images (or floats in 0..255). Received: {images.dtype}")
        images = np.round(images).astype(np.uint8)
    return "images", images


class _Progress:
    """A one-line progress bar over images, on stderr."""

    def __init__(self, label, total, quiet):
        self.label, self.total, self.quiet = label, total, quiet
        self.start = time.perf_counter()

    def __call__(self, done):
        if self.quiet:
            return
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        end = "\n" if done >= self.total else ""
        print(f"\r{self.label}: {done}/{self.total} images, {rate:.1f} images/s", end=end, file=sys.stderr, flush=True)


def _extract_groups(extractor, images, progress, done=0):
    """Features of a list of arrays that may differ in size: each size group in one call."""
    sizes = {}
    for index, image in enumerate(images):
        sizes.setdefault(image.shape, []).append(index)
    out = [None] * len(images)
    for indices in sizes.values():
        features = np.asarray(extractor(np.stack([images[i] for i in indices]))["features"])
        for row, i in zip(features, indices):
            out[i] = row
    progress(done + len(images))
    return out, set(sizes)


def read_side(path, extractor_fn, batch_size, quiet):
    """Reads one path and returns its :class:`Side` (the extractor built on first need).

    Args:
        path: a folder, an .npz of images or an .npz of statistics.
        extractor_fn: a function returning the (cached) extractor.
        batch_size: images read and extracted at a time.
        quiet: no progress bar.

    Raises:
        InputError: see :func:`list_images`, :func:`read_image`, :func:`read_npz`; fewer
            than 2 images.
    """
    from kdiff import metrics

    if os.path.isfile(path):
        kind, value = read_npz(path)
        if kind == "stats":
            mu, sigma, count = value
            return Side(path, count, None, mu, sigma)
        images = value
        if len(images) < 2:
            raise InputError(f"{path}: expected at least 2 images for a covariance. Received: {len(images)}")
        extractor = extractor_fn()
        progress = _Progress(path, len(images), quiet)
        chunks = []
        for start in range(0, len(images), batch_size):
            chunks.append(np.asarray(extractor(images[start:start + batch_size])["features"]))
            progress(min(start + batch_size, len(images)))
        features = np.concatenate(chunks).astype(np.float64)
    else:
        files = list_images(path)
        if len(files) < 2:
            raise InputError(f"{path}: expected at least 2 images for a covariance. Received: {len(files)}")
        extractor = extractor_fn()
        progress = _Progress(path, len(files), quiet)
        rows, shapes = [], set()
        for start in range(0, len(files), batch_size):
            batch = [read_image(name) for name in files[start:start + batch_size]]
            out, sizes = _extract_groups(extractor, batch, progress, done=start)
            rows.extend(out)
            shapes |= sizes
        if len(shapes) > 1:
            listed = ", ".join(f"{h}×{w}" for h, w, _ in sorted(shapes)[:4])
            print(
                f"warning: {path}: images of {len(shapes)} sizes ({listed}{', …' if len(shapes) > 4 else ''}); "
                "each is resized on its own, as pytorch-fid does with --batch-size 1",
                file=sys.stderr,
            )
        features = np.stack(rows).astype(np.float64)
    mu, sigma = metrics.feature_statistics(features)
    return Side(path, len(features), features, mu, sigma)


def compute(side_a, side_b, args):
    """FID, and what the two sides allow of FID∞, the bootstrap interval and KID.

    Returns:
        A JSON-able dict of the results.

    Raises:
        InputError: the two sides' feature dimensions differ.
    """
    from kdiff import metrics

    if side_a.mu.shape != side_b.mu.shape:
        raise InputError(
            f"{side_b.path}: expected features of {side_a.mu.shape[0]} dimensions like {side_a.path}. "
            f"Received: {side_b.mu.shape[0]}"
        )
    reference = side_b.features if side_b.features is not None else (side_b.mu, side_b.sigma)
    result = {  # from the statistics read_side computed (what --save-stats writes): one route for both
        "fid": metrics.frechet_distance(side_a.mu, side_a.sigma, side_b.mu, side_b.sigma),
        "num_images": [side_a.count, side_b.count],
        "paths": [side_a.path, side_b.path],
        "dims": int(side_a.mu.shape[0]),
    }
    infinity = fid_infinity_options(args)
    if side_a.features is not None and infinity is not None and len(side_a.features) >= 4:
        result["fid_infinity"] = metrics.fid_infinity(side_a.features, reference, seed=args.seed, **infinity)
    if side_a.features is not None and args.bootstrap:
        result["bootstrap"] = metrics.fid_bootstrap(side_a.features, reference, num_rounds=args.bootstrap, seed=args.seed)
    if side_a.features is not None and side_b.features is not None:
        kid = metrics.kid_estimate(
            side_a.features, side_b.features, num_subsets=args.kid_subsets,
            subset_size=args.kid_subset_size, seed=args.seed,
        )
        result["kid"] = {
            "mean": kid["kid"], "std": kid["subset_std"], "standard_error": kid["standard_error"],
            "subset_size": kid["subset_size"],
        }
    return result


def format_result(result, feature_space):
    """The lines the command prints (``FID: value`` first, as pytorch-fid prints it)."""
    from kdiff import metrics

    lines = [f"FID: {result['fid']:.6g}"]
    inf = result.get("fid_infinity")
    if inf:
        lines.append(
            f"FID∞: {inf['fid_infinity']:.6g} (fit over {len(inf['sizes'])} subset sizes from "
            f"{inf['sizes'][0]} to {inf['sizes'][-1]}; Chong & Forsyth 2020)"
            + (
                ""
                if inf.get("supported", True)
                else f" — UNSUPPORTED: fewer than {metrics.fid_infinity_min_samples(result['dims']):,} samples (10 × the "
                f"{result['dims']} dimensions), so the fit's small subsets are near-singular; do not compare it"
            )
        )
    boot = result.get("bootstrap")
    if boot:
        lines.append(
            f"FID {boot['confidence']:.0%} bootstrap interval: [{boot['low']:.6g}, {boot['high']:.6g}] "
            f"(std {boot['std']:.3g}, {boot['num_rounds']} rounds)"
        )
    kid = result.get("kid")
    if kid:
        spread = "n/a (every subset is the whole of both sets)" if kid["std"] is None else f"{kid['std']:.3g}"
        error = "" if kid["standard_error"] is None else f", jackknife standard error {kid['standard_error']:.3g}"
        lines.append(f"KID: {kid['mean']:.6g} (std over subsets of {kid['subset_size']}: {spread}{error})")
    else:
        lines.append("KID: not computed (it needs images on both sides, not statistics)")
    counts = [("?" if n is None else str(n)) for n in result["num_images"]]
    lines.append(f"samples: {counts[0]} ({result['paths'][0]}), {counts[1]} ({result['paths'][1]})")
    lines.append(f"feature space: {feature_space}")
    small = [n for n in result["num_images"] if n is not None and n < RELIABLE_SAMPLES]
    if small:
        lines.append(
            f"warning: FID from fewer than {RELIABLE_SAMPLES} samples ({min(small)}) is biased upwards and noisy, "
            "and not comparable with FIDs from other sample counts; compare FID∞ (--fid-infinity) instead"
        )
    return lines


def main(argv=None):
    """Runs the command; returns its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cache = {}

    def extractor():
        if "extractor" not in cache:
            from kdiff.fid import extractors

            spec = local_spec(cache["spec"], args.features)
            try:
                cache["extractor"] = extractors.load_extractor(spec)
            except (OSError, ValueError, ImportError) as error:  # ImportError: a .pth and no torch
                raise InputError(f"--features {args.features}: {error}") from None
        return cache["extractor"]

    try:
        check_extras(args)  # before any image is read
        cache["spec"] = extractor_spec(args)
        if args.save_stats:
            source, target = args.path
            if not target.endswith(".npz"):
                raise InputError(f"--save-stats: expected the output file to end in .npz. Received: {target}")
            side = read_side(source, extractor, args.batch_size, args.quiet)
            tmp = target[: -len(".npz")] + ".tmp.npz"
            np.savez(tmp, mu=side.mu, sigma=side.sigma, num_images=np.int64(side.count or 0))
            os.replace(tmp, target)
            print(f"wrote the statistics of {side.count} images to {target}")
            return 0
        side_a = read_side(args.path[0], extractor, args.batch_size, args.quiet)
        side_b = read_side(args.path[1], extractor, args.batch_size, args.quiet)
        result = compute(side_a, side_b, args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from kdiff.fid import extractors

    feature_space = extractors.describe(cache["spec"], result["dims"])
    result["feature_space"] = feature_space
    for line in format_result(result, feature_space):
        print(line)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, args.json)
    return 0
