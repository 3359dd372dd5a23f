"""Converters: reference implementations' checkpoints as kdiff models, and back."""

from kdiff.convert.ncsn import from_ncsn_checkpoint, load_ncsn_state_dict, to_ncsn_state_dict  # noqa: F401
from kdiff.convert.diffusers import from_diffusers  # noqa: F401
