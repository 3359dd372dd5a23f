"""Processes from their configs, and plain values (a list of σ's) as processes.

``kdiff.process.Process`` is the interface; this module knows its three kinds.
"""

from __future__ import annotations

from kdiff import schedules, sde
from kdiff.process import Process

__all__ = ["FAMILIES", "KINDS", "as_process", "from_config", "from_model_config"]

# diffusion family → the class of its process (whose class attributes give the family's
# defaults: data range, default sampler, network level)
FAMILIES = {cls.family: cls for cls in (schedules.Schedule, schedules.Sigmas, sde.SDE)}

# process kind → the function that rebuilds one from its config
KINDS = {
    "schedule": schedules.from_config,
    "sigmas": schedules.sigmas_from_config,
    "sde": sde.from_config,
}


def from_config(kind, config):
    """Rebuilds a process of ``kind`` from its ``get_config()``.

    Args:
        kind: "schedule", "sigmas" or "sde".
        config: the process's config.

    Returns:
        A ``Process``.
    """
    if kind not in KINDS:
        raise ValueError(f"Expected a process kind in {list(KINDS)}. Received: kind={kind!r}")
    return KINDS[kind](config)


def from_model_config(config, source="config"):
    """The process described by a model's or an export's config (the one kind key it holds).

    Args:
        config: a dict with one of the keys "schedule", "sigmas", "sde".
        source: what the config is, for the error message.

    Returns:
        A ``Process``.
    """
    kinds = [kind for kind in KINDS if config.get(kind) is not None]
    if len(kinds) != 1:
        raise ValueError(
            f"Expected exactly one process ({' | '.join(KINDS)}) in the {source}. Received: {kinds or 'none'}"
        )
    return from_config(kinds[0], config[kinds[0]])


def as_process(value, name="process"):
    """``value`` as a ``Process``: a process is returned as it is, a sequence of σ's becomes ``Sigmas``.

    Args:
        value: a ``Schedule``, ``Sigmas``, ``SDE``, or descending noise levels.
        name: the argument's name, for the message.

    Returns:
        A ``Process``.
    """
    if isinstance(value, Process):
        return value
    try:
        return schedules.Sigmas(value)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Expected `{name}` to be a kdiff process (kdiff.schedules.Schedule, kdiff.schedules.Sigmas, "
            f"kdiff.sde.SDE) or descending noise levels. Received: {name}={value!r} ({error})"
        ) from None
