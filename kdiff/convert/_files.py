"""Reading a reference's state dict into numpy arrays: from an ``.npz`` or with torch.

The importers (``kdiff.convert.ncsn``, ``kdiff.fid.weights``) read checkpoints saved by
PyTorch code; torch is needed only for ``.pth`` files, and the errors say how to do
without it.
"""

from __future__ import annotations

import numpy as np


def read_npz(path, what):
    """The arrays of an ``.npz`` file, by key.

    Args:
        path: the file.
        what: what the file should hold, for the error ("pytorch-fid's Inception state dict").

    Returns:
        A dict of numpy arrays.

    Raises:
        ValueError: numpy cannot read the file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: np.asarray(data[key]) for key in data.files}
    except Exception as error:  # numpy raises several types for a file that is not an .npz
        raise ValueError(
            f"Expected an .npz of {what} (numpy arrays under the state dict's keys). "
            f"Received: path={path!r}, which numpy cannot read ({error})"
        ) from error


def read_torch_state_dict(path, what, without_torch, unwrap=None):
    """A PyTorch checkpoint's state dict as numpy arrays (``torch.load(weights_only=True)``).

    Args:
        path: the checkpoint.
        what: what the file should hold, for the errors.
        without_torch: how to do without torch, appended to the ImportError.
        unwrap: None, or a function from the loaded object to the state dict (e.g. the
            first item of ``[state_dict, optimizer_state]``).

    Returns:
        A dict of numpy arrays.

    Raises:
        ImportError: torch is not installed.
        ValueError: torch cannot read the file, or it holds no dict of tensors.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading the PyTorch checkpoint {path!r} needs torch: `pip install torch`, {without_torch}"
        ) from error
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"Expected a PyTorch checkpoint of {what}. Received: path={path!r}, which torch "
            f"cannot read ({type(error).__name__}: {error})"
        ) from error
    if unwrap is not None:
        state = unwrap(state)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"Expected a checkpoint holding a state dict of tensors ({what}). "
            f"Received: path={path!r} holding a {type(state).__name__}"
        )
    return {key: value.detach().cpu().numpy() for key, value in state.items()}
