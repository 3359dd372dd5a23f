"""Pictures of samples: image grids and denoising trajectories, written as PNG with Pillow;
image files read back as uint8 arrays (the inputs of ``kdiff inpaint`` / ``img2img``)."""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["make_grid", "save_grid", "save_image", "read_image", "trajectory_frames", "save_trajectory"]

_BANDS = {1: "grayscale", 3: "RGB", 4: "RGBA"}


def _check_images(images, name="images"):
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(
            f"Expected uint8 `{name}` (map samples to pixels with kdiff.sampling.to_uint8). "
            f"Received: dtype={images.dtype}"
        )
    if images.ndim == 3:  # [N, H, W]: grayscale
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.shape[0] < 1:
        raise ValueError(
            f"Expected `{name}` of shape [N, H, W, C] with N >= 1 and C in (1, 3, 4). "
            f"Received: shape={list(images.shape)}"
        )
    return images


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected `{name}` to be an integer >= 1. Received: {name}={value!r}")
    return int(value)


def make_grid(images, nrow=None, *, padding=2, pad_value=0):
    """Tiles images into one picture, row by row (as torchvision's ``make_grid``).

    Args:
        images: uint8 [N, H, W, C] (or [N, H, W]).
        nrow: images per row (default: ⌈√N⌉, a near-square grid).
        padding: pixels between images and around the border.
        pad_value: the padding's pixel value.

    Returns:
        A uint8 array [rows·(H+p)+p, nrow·(W+p)+p, C].
    """
    images = _check_images(images)
    n, h, w, c = images.shape
    nrow = math.ceil(math.sqrt(n)) if nrow is None else _positive_int(nrow, "nrow")
    ncol = min(nrow, n)
    rows = math.ceil(n / ncol)
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"Expected `padding` to be an integer >= 0. Received: padding={padding!r}")
    p = int(padding)
    grid = np.full((rows * (h + p) + p, ncol * (w + p) + p, c), pad_value, dtype=np.uint8)
    for index in range(n):
        r, col = divmod(index, ncol)
        top, left = p + r * (h + p), p + col * (w + p)
        grid[top : top + h, left : left + w] = images[index]
    return grid


def _write_png(array, path, scale=1):
    from PIL import Image

    scale = _positive_int(scale, "scale")
    if scale > 1:
        array = np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[-1]]
    image = Image.fromarray(array[..., 0] if mode == "L" else array, mode=mode)
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    extension = os.path.splitext(path)[1].lower()
    image.save(path, format=None if extension in Image.registered_extensions() else "PNG")
    return path


def save_grid(images, path, nrow=None, *, padding=2, scale=1):
    """Writes images as one grid picture (PNG unless the extension names another format).

    Args:
        images: uint8 [N, H, W, C] (or [N, H, W]).
        path: the file to write; missing parent directories are created.
        nrow: images per row (default: ⌈√N⌉).
        padding: pixels between images.
        scale: integer upscaling (nearest neighbour), for small images.

    Returns:
        The grid array that was written (before scaling).
    """
    grid = make_grid(images, nrow, padding=padding)
    _write_png(grid, path, scale)
    return grid


def save_image(image, path, scale=1):
    """Writes one uint8 image [H, W, C] (or [H, W]) as a picture (PNG unless the extension names another).

    Args:
        image: the pixels.
        path: the file to write; missing parent directories are created.
        scale: integer upscaling (nearest neighbour).

    Returns:
        ``path``.
    """
    return _write_png(_check_images(np.asarray(image)[None])[0], path, scale)


def read_image(path, channels=None):
    """An image file as uint8 pixels [H, W, C] (Pillow: PNG, JPEG, …; EXIF orientation applied).

    A palette image is read as RGB (RGBA with transparency); nothing is resized or converted
    between grayscale and colour.

    Args:
        path: the file.
        channels: the channels expected (1, 3 or 4), or None for the file's own.

    Returns:
        A uint8 array [H, W, C].

    Raises:
        ValueError: the file is missing or not a readable image, or has other channels,
            naming the file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif image.mode in ("1", "I;16", "I", "F"):
                image = image.convert("L")
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise ValueError(f"Expected a readable image file. Received: {os.fspath(path)!r} ({error})") from None
    array = array[..., None] if array.ndim == 2 else array
    if channels is not None and array.shape[-1] != channels:
        raise ValueError(
            f"Expected a {_BANDS.get(channels, channels)} image ({channels} channel(s)). "
            f"Received: {os.fspath(path)!r} with {array.shape[-1]} ({_BANDS.get(array.shape[-1], '?')})"
        )
    return array


def trajectory_frames(num_states, num_frames=10):
    """Indices of ``num_frames`` evenly spaced states out of ``num_states`` (first and last kept)."""
    num_states = _positive_int(num_states, "num_states")
    num_frames = min(_positive_int(num_frames, "num_frames"), num_states)
    return np.unique(np.round(np.linspace(0, num_states - 1, num_frames)).astype(int))


def save_trajectory(trajectory, path, num_frames=10, *, padding=2, scale=1):
    """Writes a denoising trajectory: one row per sample, columns from noise to image.

    Args:
        trajectory: uint8 [num_states, N, H, W, C], as ``kdiff.sample(...,
            return_trajectory=True)`` returns (the start noise first).
        path: the file to write.
        num_frames: columns: evenly spaced states, the first and the last included.
        padding: pixels between images.
        scale: integer upscaling (nearest neighbour).

    Returns:
        The picture written (before scaling), uint8.
    """
    trajectory = np.asarray(trajectory)
    if trajectory.ndim == 4:
        trajectory = trajectory[..., None]
    if trajectory.ndim != 5:
        raise ValueError(
            "Expected `trajectory` of shape [num_states, N, H, W, C]. "
            f"Received: shape={list(trajectory.shape)}"
        )
    frames = trajectory_frames(trajectory.shape[0], num_frames)
    chosen = _check_images(trajectory[frames].reshape((-1,) + trajectory.shape[2:]), "trajectory")
    # [frames, N, ...] → [N, frames, ...]: each sample's states along one row
    rows = chosen.reshape((len(frames), trajectory.shape[1]) + chosen.shape[1:]).swapaxes(0, 1)
    grid = make_grid(rows.reshape((-1,) + chosen.shape[1:]), nrow=len(frames), padding=padding)
    _write_png(grid, path, scale)
    return grid
