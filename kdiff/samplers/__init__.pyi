"""kdiff.samplers' public names, each imported on first use (``kdiff._lazy.attach_stub`` reads this stub)."""

from kdiff.samplers.ddpm_ddim import ddim as ddim
from kdiff.samplers.ddpm_ddim import ddim_invert as ddim_invert
from kdiff.samplers.ddpm_ddim import ddim_timesteps as ddim_timesteps
from kdiff.samplers.ddpm_ddim import ddpm as ddpm
from kdiff.samplers.dpm_multistep import DPM_ALGORITHMS as DPM_ALGORITHMS
from kdiff.samplers.dpm_multistep import DPM_SOLVER_TYPES as DPM_SOLVER_TYPES
from kdiff.samplers.dpm_multistep import dpm_solver as dpm_solver
from kdiff.samplers.dpm_multistep import dpm_timesteps as dpm_timesteps
from kdiff.samplers.errors import NonFiniteSampleError as NonFiniteSampleError
from kdiff.samplers.karras import euler as euler
from kdiff.samplers.karras import euler_ancestral as euler_ancestral
from kdiff.samplers.karras import heun as heun
from kdiff.samplers.langevin_dynamics import annealed_langevin as annealed_langevin
from kdiff.samplers.langevin_dynamics import langevin as langevin
from kdiff.samplers.reverse_sde import ODE_FIXED_METHODS as ODE_FIXED_METHODS
from kdiff.samplers.reverse_sde import euler_maruyama as euler_maruyama
from kdiff.samplers.reverse_sde import predictor_corrector as predictor_corrector
from kdiff.samplers.reverse_sde import probability_flow as probability_flow
from kdiff.samplers import guidance as guidance
from kdiff.samplers import recipes as recipes
from kdiff.samplers import registry as registry

__all__ = [
    "ddim",
    "ddim_invert",
    "ddim_timesteps",
    "ddpm",
    "DPM_ALGORITHMS",
    "DPM_SOLVER_TYPES",
    "dpm_solver",
    "dpm_timesteps",
    "NonFiniteSampleError",
    "euler",
    "euler_ancestral",
    "heun",
    "annealed_langevin",
    "langevin",
    "ODE_FIXED_METHODS",
    "euler_maruyama",
    "predictor_corrector",
    "probability_flow",
    "guidance",
    "recipes",
    "registry",
]
