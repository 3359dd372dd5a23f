"""One check for every sampling request: ``kdiff.sample``, ``model.generate``, the export, the
``kdiff`` CLI and the pipeline's sample stage all resolve (sampler, steps, options, recipe)
against a process here, so a request is accepted or refused the same way everywhere."""

from __future__ import annotations

from kdiff.samplers import recipes, registry

__all__ = ["RequestError", "check_defaults", "merge_defaults", "resolve"]


class RequestError(ValueError):
    """A sampling request that cannot run, naming the part at fault.

    Attributes:
        argument: "sampler", "steps", "options" or "recipe".
        options: the option names at fault (for "options"), else ().
    """

    def __init__(self, message, argument, options=()):
        super().__init__(message)
        self.argument, self.options = argument, tuple(options)


def resolve(
    process,
    sampler=None,
    steps=None,
    options=None,
    recipe=None,
    *,
    default_sampler=None,
    sampler_defaults=None,
    data_range=None,
    name="sampler options",
):
    """Checks a sampling request and returns the registry entry and the sampler's keyword arguments.

    In order of precedence the options are: the given ``options``, the recipe's, the
    model's per-sampler defaults (``sampler_defaults``), for samplers that predict x₀ a clip
    to ``data_range`` (user-facing sampling clips by default, as diffusers does;
    ``clip_x0=None`` turns it off), and the function's own defaults. Sampler-specific
    options (DDIM's ``eta``, Karras' ``rho``) travel here, never as generic arguments.

    Args:
        process: the model's ``kdiff.process.Process``.
        sampler: a registered name (None: the recipe's, else ``default_sampler``, else the
            process's).
        steps: the number of steps (None: the recipe's, else the entry's default; an int
            tensor inside a graph).
        options: the sampler's options.
        recipe: a name in ``kdiff.samplers.recipes.names()``.
        default_sampler: the model's own default sampler.
        sampler_defaults: per-sampler option defaults of the model (``{name: {option: value}}``).
        data_range: (low, high) the model's data lives in (None: no default clip).
        name: what the options are called, for messages.

    Returns:
        ``(entry, kwargs)``: the ``registry.Sampler`` and the keyword arguments of its
        function (steps included under its ``steps_arg``).

    Raises:
        RequestError: an unknown sampler, recipe or option; a sampler or recipe that does
            not walk this process; steps the sampler does not take or the process does not
            have — naming the argument, what was expected and what was received.
    """
    try:
        sampler, steps, options = recipes.resolve(recipe, sampler, steps, dict(options or {}))
        if recipe is not None:
            recipes.check_fits(recipe, process)
    except ValueError as error:
        raise RequestError(str(error), "recipe") from None
    try:
        entry = registry.get(sampler or default_sampler or process.default_sampler)
    except ValueError as error:
        raise RequestError(str(error), "sampler") from None
    if not entry.accepts(process):
        kind = process.kind
        raise RequestError(
            f"Expected a sampler for a {kind} ({type(process).__name__}) process: one of "
            f"{registry.names(kind)}. Received: sampler={entry.name!r}, which needs a "
            f"{' or '.join(entry.processes)} (pass {entry.processes[0]}=... with a callable model)",
            "sampler",
        )
    given = {**(sampler_defaults or {}).get(entry.name, {}), **options}
    if entry.clips_x0 and "clip_x0" not in given and data_range is not None:
        given["clip_x0"] = data_range
    unknown = sorted(set(given) - set(entry.options()))
    try:
        kwargs = entry.check_options(given, name)
    except ValueError as error:
        raise RequestError(str(error), "options", unknown) from None
    steps = entry.steps_for(process, steps)
    if steps is not None:
        if entry.steps_arg is None:
            raise RequestError(f"Expected no `steps` for sampler {entry.name!r}. Received: steps={steps!r}", "steps")
        _check_steps(entry, process, steps)
        kwargs[entry.steps_arg] = steps
    return entry, kwargs


def _check_steps(entry, process, steps):
    """A Python int number of steps within what the process has (a tensor is checked in the graph)."""
    if not isinstance(steps, int) or entry.steps_arg != "steps":
        return
    if isinstance(steps, bool) or steps < 1:
        raise RequestError(f"Expected `steps` >= 1 for sampler {entry.name!r}. Received: steps={steps!r}", "steps")
    if process.max_steps is not None and steps > process.max_steps and not process.continuous_time:
        raise RequestError(
            f"Expected at most the model's {process.steps_name}={process.max_steps} steps for sampler "
            f"{entry.name!r}. Received: steps={steps}",
            "steps",
        )


def check_defaults(process, default_sampler=None, sampler_defaults=None):
    """A model's own sampling defaults, checked against its process.

    Args:
        process: the model's ``kdiff.process.Process``.
        default_sampler: a registered sampler name that walks ``process``, or None.
        sampler_defaults: ``{sampler name: {option: value}}`` (each sampler registered and
            walking ``process``, each option one of its options), or None.

    Returns:
        ``(default_sampler, sampler_defaults)``: the name (or None) and a new dict of new dicts.

    Raises:
        ValueError: naming the argument, the sampler and the options at fault.
    """
    if default_sampler is not None:
        entry = registry.get(default_sampler)  # an unknown name: the registered ones
        if not entry.accepts(process):
            raise ValueError(
                f"Expected `default_sampler` to be a sampler for a {process.kind} process: one of "
                f"{registry.names(process.kind)}. Received: default_sampler={default_sampler!r}"
            )
    if sampler_defaults is None:
        return default_sampler, {}
    if not isinstance(sampler_defaults, dict) or not all(isinstance(v, dict) for v in sampler_defaults.values()):
        raise ValueError(
            "Expected `sampler_defaults` to be a dict {sampler name: {option: value}}. "
            f"Received: sampler_defaults={sampler_defaults!r}"
        )
    for name, options in sampler_defaults.items():
        entry = registry.get(name)
        if not entry.accepts(process):
            raise ValueError(
                f"Expected `sampler_defaults` for samplers of a {process.kind} process: {registry.names(process.kind)}. "
                f"Received: {name!r}"
            )
        entry.check_options(options, f"`sampler_defaults[{name!r}]`")
    return default_sampler, {name: dict(options) for name, options in sampler_defaults.items()}


def merge_defaults(*layers):
    """Per-sampler option defaults merged, later layers' options over earlier ones'.

    Args:
        *layers: ``{sampler name: {option: value}}`` dicts (None skipped).

    Returns:
        A new dict of new dicts.
    """
    merged = {}
    for layer in layers:
        for name, options in (layer or {}).items():
            merged[name] = {**merged.get(name, {}), **options}
    return merged
