"""Every sampler of kdiff: pure functions of (model function, start tensor, process, options).

* ``ddpm``, ``ddim``, ``ddim_invert`` — DDPM ancestral sampling (Algorithm 2, with
  Improved DDPM's learned variance and respacing), DDIM (eq. 31) and its inversion
  (``ddpm_ddim.py``);
* ``langevin``, ``annealed_langevin`` — Langevin dynamics (eq. 43) and NCSN's annealed
  Langevin dynamics (Algorithm 1) (``langevin_dynamics.py``);
* ``euler_maruyama``, ``predictor_corrector``, ``probability_flow`` — the reverse-SDE
  solvers of score-based models (``reverse_sde.py``);
* ``dpm_solver`` — multistep DPM-Solver++ (``dpm_multistep.py``);
* ``euler``, ``heun``, ``euler_ancestral`` — Karras et al.'s samplers (``karras.py``).

Beside them: ``registry`` (the table of samplers that ``kdiff.sample``, the export, the
CLI and the pipeline read), ``recipes`` (reference runs by name), ``guidance``
(classifier-free guidance), ``editing`` (inpainting and img2img) and ``draw`` (one batch
from a model). The step loop (``_loop``) and the helpers (``_common``) are private.

Every per-step coefficient is computed once, in float64, into one array indexed by the
step, so timesteps, noise levels and coefficients cannot drift apart. Fixed-step samplers
run their loop as one ``tf.while_loop``; each takes

    seed: int, shape-[2] int tensor, or None — stateless noise, reproducible;
    noise_fn: ``noise_fn(shape) -> noise``, called once per noise draw in step order
        (tests use it to inject noise); forces an eager Python loop;
    return_trajectory: also return the list of intermediate x (start included);
    compiled: False runs the loop eagerly in Python (debugging);
    jit_compile: True, False or "auto" (XLA only where a GPU/TPU is visible);
    callback: ``callback(i, num_steps)``, a Python function called after each step i
        (0-based) — progress bars, logging; in a compiled loop it runs through
        ``tf.numpy_function``, so not under XLA and not inside a SavedModel;
    edit: a step edit (inpainting and img2img, ``kdiff.samplers.editing``): every
        fixed-step sampler reports the level of its state to the shared loop, whose hooks
        the edit uses.

Model callables: ``eps_fn(x, t)`` with t an int32 tensor [batch] of 0-based timesteps;
``score_fn(x, s)`` with s a float tensor [batch] (σ for NCSN, continuous t for SDEs).

The public names, listed in ``__init__.pyi``, and the submodules are imported on first use
(``kdiff._lazy``): ``registry`` and ``recipes`` import no TensorFlow, so the ``kdiff``
command builds its ``--sampler`` / ``--recipe`` choices at once.
"""

from kdiff import _lazy

# The public names, in __init__.pyi.
__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
