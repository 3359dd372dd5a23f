"""kdiff's public names, each imported on first use (``kdiff._lazy.attach_stub`` reads this stub)."""

from kdiff import data as data
from kdiff import digits as digits
from kdiff import distribute as distribute
from kdiff import export as export
from kdiff import images as images
from kdiff import likelihood as likelihood
from kdiff import losses as losses
from kdiff import metrics as metrics
from kdiff import models as models
from kdiff import optim as optim
from kdiff import process as process
from kdiff import samplers as samplers
from kdiff import schedules as schedules
from kdiff import sde as sde
from kdiff.convert.diffusers import from_diffusers as from_diffusers
from kdiff.convert.ncsn import from_ncsn_checkpoint as from_ncsn_checkpoint
from kdiff.diffusion import DDPM as DDPM
from kdiff.diffusion import NCSN as NCSN
from kdiff.diffusion import ScoreSDE as ScoreSDE
from kdiff.export import load as load
from kdiff.interpolation import slerp as slerp
from kdiff.samplers.editing import img2img as img2img
from kdiff.samplers.editing import inpaint as inpaint
from kdiff.sampling import sample as sample

__version__: str

__all__ = [
    "data",
    "digits",
    "distribute",
    "export",
    "images",
    "likelihood",
    "losses",
    "metrics",
    "models",
    "optim",
    "process",
    "samplers",
    "schedules",
    "sde",
    "from_diffusers",
    "from_ncsn_checkpoint",
    "DDPM",
    "NCSN",
    "ScoreSDE",
    "load",
    "slerp",
    "img2img",
    "inpaint",
    "sample",
    "__version__",
]
