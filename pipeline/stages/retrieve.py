"""Retrieve stage: similarity retrieval, made quantitative.

The survey of Cerizza, Savazzi and Barbera ("Diffusion Models", Università di
Milano-Bicocca, 2023; section 5.5, Figures 20–23) shows each generated image next to its
five most similar training images, to check that a model does not just reproduce its
training set. This stage does the same for every generated sample: the ``knn`` nearest
training images by Euclidean distance in the feature space the evaluate stage used (its
``features.npz``); a memorization statistic — the share of samples whose nearest training
image is closer than the median train–train nearest-neighbour distance
(``kdiff.metrics.memorization_ratio`` with ``kdiff.metrics.median_nn_distance``) — and
panels: each row is a generated sample, then its nearest training images, under column
titles drawn into the picture ("sample", then "nearest training images" over "1st",
"2nd", … nearest first).

The feature space is the evaluate stage's, or with ``retrieval_features="inception"``
Keras' ImageNet InceptionV3 (``inception_weights``), the survey's own choice for its
retrieval: the stage then extracts those features itself (in-process, in batches).

Writes ``retrieval.json`` ({sampler: {"memorization_ratio", "mean_nn_distance",
"train_train_median_nn", "knn", "num_samples", "panel"}}) and ``panels/<sampler>.png``.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from pipeline import io
from pipeline.data import load_examples
from pipeline.stages.base import (
    EXAMPLES,
    METRICS,
    RETRIEVAL,
    SAMPLES,
    StageError,
    StageSpec,
)

SPEC = StageSpec(
    name="retrieve",
    inputs={"examples": EXAMPLES, "samples": SAMPLES, "metrics": METRICS},
    outputs={"retrieval": RETRIEVAL},
)

FEATURE_BATCH = 64  # images per feature batch when the stage extracts its own features
PANEL_ROWS = 8  # samples shown per panel (the first ones, in sample order)
PANEL_TILE = 64  # small images are scaled up (nearest neighbour) to about this many pixels
PANEL_PADDING = 2  # pixels between tiles (after scaling)
PANEL_GAP = 6  # extra pixels between the sample column and its neighbours
PANEL_BACKGROUND = (255, 255, 255)
PANEL_SEPARATOR = (220, 40, 40)  # a red bar after the generated sample
PANEL_TEXT = (40, 40, 40)  # the column titles
PANEL_LINE = 12  # pixels per line of column titles (PIL's default font is about 10 high)
PANEL_TITLE_LINES = 2  # "sample" / "nearest training images", then "1st", "2nd", …


def _log(message):
    print(f"[retrieve] {message}", flush=True)


def panel_scale(height, width):
    """The integer factor that brings a tile to about ``PANEL_TILE`` pixels (at least 1)."""
    return max(1, PANEL_TILE // max(height, width))


def panel_layout(num_rows, k, height, width, scale):
    """Top-left pixel corners of every tile: ``tops[row]``, ``lefts[column]`` (column 0 = sample).

    The tiles start below ``PANEL_TITLE_LINES`` lines of column titles.

    Returns:
        ``(tops, lefts, (panel height, panel width))``.
    """
    h, w = height * scale, width * scale
    header = PANEL_PADDING + PANEL_TITLE_LINES * PANEL_LINE
    tops = [header + PANEL_PADDING + r * (h + PANEL_PADDING) for r in range(num_rows)]
    lefts = [PANEL_PADDING]
    lefts += [PANEL_PADDING + PANEL_GAP + c * (w + PANEL_PADDING) for c in range(1, k + 1)]
    size = (tops[-1] + h + PANEL_PADDING, lefts[-1] + w + PANEL_PADDING)
    return tops, lefts, size


def ordinal(number):
    """A column title: "1st", "2nd", "3rd", "4th", …, "11th", "12th", "13th", "21st", ….

    Args:
        number: an integer ≥ 1.

    Returns:
        The English ordinal as a string.
    """
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def _first_fitting(draw, font, texts, width):
    """The first of ``texts`` that fits in ``width`` pixels (else the last, the shortest)."""
    for text in texts:
        if draw.textlength(text, font=font) <= width:
            return text
    return texts[-1]


def draw_column_titles(panel, lefts, tile_width):
    """Writes the column titles into the panel's top rows (in place).

    Line 1: "sample" over column 0 and "nearest training images" over the neighbours (a
    shorter form where it does not fit); line 2: "1st", "2nd", … over each neighbour.

    Args:
        panel: the uint8 ``[height, width, 3]`` panel, its top ``PANEL_TITLE_LINES`` lines blank.
        lefts: the tiles' left edges (``panel_layout``), column 0 the sample.
        tile_width: a tile's width in pixels.

    Returns:
        The panel.
    """
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.fromarray(panel)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()

    def centred(text, left, width, line):
        x = left + (width - draw.textlength(text, font=font)) / 2
        draw.text((max(0, x), PANEL_PADDING + line * PANEL_LINE), text, fill=PANEL_TEXT, font=font)

    centred(_first_fitting(draw, font, ("sample", "gen."), tile_width + PANEL_GAP), lefts[0], tile_width, 0)
    span = lefts[-1] + tile_width - lefts[1]
    title = _first_fitting(draw, font, ("nearest training images", "nearest training", "nearest", "NN"), span)
    centred(title, lefts[1], span, 0)
    for column, left in enumerate(lefts[1:], start=1):
        centred(ordinal(column), left, tile_width, 1)
    return np.asarray(picture)


def make_panel(samples, neighbors, scale):
    """The retrieval panel as a uint8 RGB array, with column titles.

    Args:
        samples: uint8 ``[R, H, W, C]`` generated samples (one per row).
        neighbors: uint8 ``[R, k, H, W, C]`` their nearest training images, nearest first.
        scale: integer upscaling factor (nearest neighbour).

    Returns:
        uint8 ``[height, width, 3]``: the titles ("sample", "nearest training images" over
        "1st" … "kth"), then each row = the sample, a red bar, its k neighbours.
    """
    rows, k, height, width, _channels = neighbors.shape
    tops, lefts, size = panel_layout(rows, k, height, width, scale)
    panel = np.empty(size + (3,), np.uint8)
    panel[:] = PANEL_BACKGROUND

    def tile(image):
        image = image[..., :3]
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)

    h, w = height * scale, width * scale
    for r in range(rows):
        panel[tops[r] : tops[r] + h, lefts[0] : lefts[0] + w] = tile(samples[r])
        bar = lefts[0] + w + (lefts[1] - lefts[0] - w) // 2 - 1
        panel[tops[r] : tops[r] + h, bar : bar + 2] = PANEL_SEPARATOR
        for c in range(k):
            panel[tops[r] : tops[r] + h, lefts[c + 1] : lefts[c + 1] + w] = tile(neighbors[r, c])
    return draw_column_titles(panel, lefts, w)


def inception_features(named_images, weights):
    """Keras' InceptionV3 features (2048-d average pool) of each image set, in batches.

    Args:
        named_images: ``{name: uint8 [N, H, W, C]}``.
        weights: "imagenet" (fetched once into Keras' cache), a weights file or its URL
            in an object store (copied locally for the extraction).

    Returns:
        ``{name: float [N, 2048]}``.

    Raises:
        StageError: the weights cannot be found or downloaded.
    """
    from pipeline import features as features_lib

    spec = {"kind": "inception_v3", "weights": weights, "source": weights}
    with contextlib.ExitStack() as files:
        try:
            if weights == "imagenet" or not io.is_remote(weights):
                spec["weights"] = features_lib.resolve_inception_weights(weights)
            extractor = features_lib.load_extractor(features_lib.local_spec(spec, files))
        except OSError as error:
            raise StageError(
                f"retrieve: --retrieval_features=inception needs Keras' InceptionV3 weights, but {error}. Download "
                f"{features_lib.IMAGENET_NOTOP_URL} where there is internet and pass --inception_weights=PATH or URL."
            ) from None
        return _inception_features(extractor, named_images)


def _inception_features(extractor, named_images):
    """``{name: extractor features}`` of each image set, ``FEATURE_BATCH`` images a call."""
    result = {}
    for name, images in named_images.items():
        chunks = [extractor(images[i : i + FEATURE_BATCH])["features"] for i in range(0, len(images), FEATURE_BATCH)]
        result[name] = np.concatenate(chunks)
        _log(f"InceptionV3 features of {name}: {len(images)} images")
    return result


class Executor:
    """Nearest training images of every sampler's samples, memorization, panels."""

    def Do(self, inputs, outputs, params):
        from PIL import Image

        from kdiff import metrics

        knn = int(params.get("knn", 5))
        if knn < 1:
            raise StageError(f"retrieve: --knn must be >= 1. Received: knn={knn}")
        features_path = os.path.join(inputs["metrics"], "features.npz")
        if not io.exists(features_path):
            raise StageError(
                f"retrieve: no features.npz in the Metrics at {inputs['metrics']}; rerun the evaluate stage."
            )
        stored = io.read_npz(features_path)
        if "train" not in stored:
            raise StageError(
                f"retrieve: {features_path} has no 'train' features; rerun the evaluate stage (--force)."
            )
        train_features = stored["train"]
        try:
            train, _ = load_examples(inputs["examples"], "train")
        except (OSError, ValueError) as error:
            raise StageError(
                f"retrieve: cannot read the training images at {inputs['examples']} ({error}); rerun ingest."
            ) from None
        if len(train) != len(train_features):
            raise StageError(
                f"retrieve: {features_path} has {len(train_features)} training feature rows but the Examples at "
                f"{inputs['examples']} hold {len(train)} training images: the metrics come from another "
                "ingest. Rerun the evaluate stage (--force)."
            )
        names = sorted(key[len("samples/") :] for key in stored if key.startswith("samples/"))
        if not names:
            raise StageError(
                f"retrieve: {features_path} has no 'samples/<name>' features; rerun the evaluate stage."
            )
        feature_space = "the evaluate stage's FID features"
        if params.get("retrieval_features") == "inception":
            sets = {"train": train}
            for name in names:
                sets[f"samples/{name}"] = _read_samples(os.path.join(inputs["samples"], name, "samples.npz"))
            stored = inception_features(sets, params.get("inception_weights") or "imagenet")
            train_features = stored["train"]
            feature_space = "Keras' ImageNet InceptionV3 (2048-d average pool)"

        k = min(knn, len(train))
        threshold = metrics.median_nn_distance(train_features)
        _log(f"{len(train)} training images; train–train median nearest-neighbour distance {threshold:.4g}")
        result = {}
        with io.atomic_directory(outputs["retrieval"]) as out:
            io.makedirs(os.path.join(out, "panels"), exist_ok=False)
            for name in names:
                sample_features = stored[f"samples/{name}"]
                path = os.path.join(inputs["samples"], name, "samples.npz")
                images = _read_samples(path)
                if len(images) != len(sample_features) or images.shape[1:] != train.shape[1:]:
                    raise StageError(
                        f"retrieve: {path} holds {len(images)} images of {list(images.shape[1:])} but the metrics "
                        f"have {len(sample_features)} feature rows for {name} (training images: "
                        f"{list(train.shape[1:])}); rerun the evaluate stage (--force)."
                    )
                distances, indices = metrics.nearest_neighbors(sample_features, train_features, k=k)
                ratio = metrics.memorization_ratio(sample_features, train_features, threshold=threshold)
                rows = min(PANEL_ROWS, len(images))
                scale = panel_scale(*train.shape[1:3])
                panel = make_panel(images[:rows], train[indices[:rows]], scale)
                panel_path = os.path.join("panels", f"{name}.png")
                Image.fromarray(panel).save(os.path.join(out, panel_path))
                result[name] = {
                    "feature_space": feature_space,
                    "memorization_ratio": ratio,
                    "mean_nn_distance": float(np.mean(distances[:, 0])),
                    "train_train_median_nn": threshold,
                    "knn": k,
                    "num_samples": len(images),
                    "panel": {
                        "path": panel_path,
                        "sample_indices": list(range(rows)),
                        "neighbor_indices": indices[:rows].tolist(),
                        "neighbor_distances": distances[:rows].tolist(),
                        "scale": scale,
                    },
                }
                _log(
                    f"{name}: memorization ratio {ratio:.3f}, mean nearest-neighbour distance "
                    f"{result[name]['mean_nn_distance']:.4g} (train–train median {threshold:.4g})"
                )
            io.write_json(os.path.join(out, "retrieval.json"), result)
        _log(f"wrote {outputs['retrieval']}/retrieval.json and panels/")


def _read_samples(path):
    """The ``images`` of a ``samples.npz``, or StageError naming the file."""
    try:
        return io.read_npz(path, ["images"])["images"]
    except (OSError, KeyError, ValueError) as error:
        raise StageError(f"retrieve: cannot read {path} ({error}); rerun the sample stage.") from None
