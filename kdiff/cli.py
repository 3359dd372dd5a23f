"""The ``kdiff`` console command.

    kdiff sample --model saved_models/digits --num 16 --sampler ddim --steps 50 --seed 0 \\
        --out grid.png [--trajectory trajectory.png]
    kdiff sample --model export/ --recipe ddim_50 --out grid.png
    kdiff info --model saved_models/digits
    kdiff convert --from diffusers google/ddpm-celebahq-256 --out exports/ddpm_celebahq
    kdiff convert --from ncsn run/logs/celeba/checkpoint.pth --config celeba --out exports/ncsn_celeba
    kdiff inpaint --model export/ --image a.png b.png --mask mask.png --out filled/ [--resample 10 --jump_length 10]
    kdiff img2img --model export/ --image a.png --strength 0.5 --out edited/

``sample`` runs ``kdiff.sample`` on a directory written by ``kdiff.export.export`` and
writes a PNG grid of the images (and, with ``--trajectory``, a picture of the denoising
steps: one row per sample, ~10 evenly spaced states from noise to image). Its samplers
are those of ``kdiff.samplers.registry`` that fit the model's process; ``--option KEY=VALUE`` sets
any of the sampler's options, and DDPM / DDIM clip the predicted x₀ to the data range
unless ``--no_clip``; ``--recipe`` takes a sampler and its options from
``kdiff.samplers.recipes`` (explicit ``--steps`` / ``--option`` override them). ``info`` prints the
export's ``config.json`` (with ``source``, where a converted model came from), each list
longer than 8 values summarized as its count, first and last value (``--full``: all).
``convert`` reads a diffusers checkpoint (``kdiff.from_diffusers``: a folder or a hub id;
one without a scheduler needs ``--scheduler``, a scheduler_config.json or
``DDPMScheduler`` for its defaults) or an ermongroup/ncsn checkpoint
(``kdiff.from_ncsn_checkpoint``) and writes it with
``kdiff.export.export`` — a SavedModel with ``denoise`` and ``generate`` for TF Serving,
``generate`` sampling with a recipe (``--recipe``; default ``ddim_50`` for DDPM,
``score_sde_ve_pc`` for NCSN++, ``ncsn_annealed_langevin`` for NCSN) — recording the
source in ``config.json``. ``inpaint`` and ``img2img`` run ``kdiff.inpaint`` /
``kdiff.img2img`` on image files of the model's size and channels (nothing is resized)
and write one PNG per image into ``--out``. Usage errors, unreadable checkpoints and bad
image or mask files exit with status 2 and a message naming the flag or file; nothing is
written then. TensorFlow's start-up logs are
hidden unless ``--verbose``.

The parser is built without TensorFlow (the sampler and recipe names come from
``kdiff.samplers.registry`` and ``recipes``, which import none), so ``--help``, usage
errors and ``info`` answer at once; each other command imports what it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main", "build_parser", "parse", "run", "TENSORFLOW_FREE_COMMANDS"]

# The subcommands that never import TensorFlow (the console script then skips its quiet start).
TENSORFLOW_FREE_COMMANDS = ("info",)
# `info` prints a list longer than this as its count, first and last value.
SUMMARY_LENGTH = 8


def _argument_type(convert, check, description):
    """An argparse ``type``: ``check(convert(text))`` with kdiff's own validator, its
    ValueError turned into argparse's usage error."""

    def parse(text):
        try:
            return check(convert(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None

    parse.__name__ = description
    return parse


def _int_at_least(low):
    from kdiff import checks

    return _argument_type(int, lambda v: checks.int_in_range(v, "value", low, None), f"an integer >= {low}")


def _non_negative_float(text):
    from kdiff import checks

    return _argument_type(float, lambda v: checks.non_negative(v, "value"), "a finite number >= 0")(text)


def _option(text):
    """``KEY=VALUE`` → (key, value), the value read as JSON when it parses (0.2, true, null,
    [0, 1]) and as a string otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def build_parser():
    """The argument parser of ``kdiff`` (subcommands ``sample``, ``info`` and ``convert``).

    Returns:
        An ``argparse.ArgumentParser``.
    """
    from kdiff.samplers import recipes, registry

    parser = argparse.ArgumentParser(
        prog="kdiff", description="Sample from exported kdiff diffusion models; convert pretrained checkpoints."
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    sample = commands.add_parser(
        "sample",
        help="sample images from an exported model and write a PNG grid",
        description="Sample images from a directory written by kdiff.export.export and write a PNG grid.",
    )
    sample.add_argument("--model", required=True, metavar="PATH", help="the export's directory")
    sample.add_argument("--out", required=True, metavar="PNG", help="the grid picture to write")
    sample.add_argument("--num", type=_int_at_least(1), default=16, help="how many images (default 16)")
    sample.add_argument(
        "--recipe", choices=recipes.names(), default=None,
        help="a reference run's sampler, steps and options (kdiff.samplers.recipes); --steps and --option override",
    )
    sample.add_argument(
        "--sampler", choices=registry.names(), default=None, help="the sampler (default: the model's)"
    )
    sample.add_argument(
        "--steps",
        type=_int_at_least(1),
        default=None,
        help="sampling steps (default: the sampler's; Langevin steps per level for annealed_langevin)",
    )
    sample.add_argument("--seed", type=_int_at_least(0), default=0, help="same seed, same images (default 0)")
    sample.add_argument("--batch_size", type=_int_at_least(1), default=None, help="images per batch (default 64)")
    sample.add_argument("--eta", type=_non_negative_float, default=0.0, help="DDIM's eta (ddim only; default 0)")
    sample.add_argument(
        "--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
        help="a sampler option, e.g. --option snr=0.2 --option denoise=false (repeatable; JSON values)",
    )
    sample.add_argument(
        "--no_clip", action="store_true", help="do not clip DDPM's / DDIM's predicted x0 to the data range"
    )
    sample.add_argument(
        "--class_label", "--class", type=_int_at_least(0), default=None,
        help="one class for every image (class-conditional models)",
    )
    sample.add_argument(
        "--guidance_scale", "--guidance-scale", type=_non_negative_float, default=None, metavar="S",
        help="classifier-free guidance scale (models trained with a null class; 1: conditional, 0: unconditional)",
    )
    sample.add_argument("--nrow", type=_int_at_least(1), default=None, help="images per grid row (default: square)")
    sample.add_argument("--scale", type=_int_at_least(1), default=1, help="integer upscaling of the pictures")
    sample.add_argument(
        "--trajectory", default=None, metavar="PNG", help="also write the denoising steps (rows: samples)"
    )
    sample.add_argument(
        "--frames", type=_int_at_least(2), default=10, help="states per trajectory row (default 10)"
    )
    sample.set_defaults(run=_sample)

    info = commands.add_parser(
        "info", help="print an export's config.json",
        description=f"Print an export's config.json, each list longer than {SUMMARY_LENGTH} values as its count, "
        "first and last value.",
    )
    info.add_argument("--model", required=True, metavar="PATH", help="the export's directory")
    info.add_argument("--full", action="store_true", help="print every value of long lists too")
    info.set_defaults(run=_info)

    convert = commands.add_parser(
        "convert",
        help="write a diffusers or ermongroup/ncsn checkpoint as a kdiff export",
        description="Convert a pretrained checkpoint (diffusers UNet2DModel with its scheduler, or "
        "ermongroup/ncsn's CondRefineNetDilated) into a kdiff SavedModel with denoise and generate.",
    )
    convert.add_argument("--from", dest="source_kind", required=True, choices=("diffusers", "ncsn"),
                         help="the checkpoint's kind")
    convert.add_argument("src", metavar="SRC",
                         help="diffusers: a pipeline / model folder or a hub id; ncsn: checkpoint.pth or .npz")
    convert.add_argument("--out", required=True, metavar="DIR", help="the export directory to write")
    convert.add_argument(
        "--recipe", choices=recipes.names(), default=None,
        help="the sampling recipe of `generate` (default: ddim_50, score_sde_ve_pc or ncsn_annealed_langevin)",
    )
    convert.add_argument("--revision", default=None, help="diffusers hub ids: the revision (branch, tag, commit)")
    convert.add_argument(
        "--scheduler", default=None, metavar="PATH|NAME",
        help="diffusers: the scheduler of a checkpoint that has none (or to override its own): a "
        "scheduler_config.json or its folder, or DDPMScheduler / DDIMScheduler / ScoreSdeVeScheduler for "
        "that scheduler's defaults",
    )
    convert.add_argument("--config", default=None, choices=("celeba", "cifar10", "mnist"),
                         help="ncsn: the reference's anneal.yml preset (default: read off the weights, 32x32)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    convert.set_defaults(run=_convert)

    edits = (  # name, help, description, its own arguments, its handler
        ("inpaint", "fill the masked pixels of image files with an exported model's samples",
         "Inpaint image files with an export (kdiff.inpaint): the known pixels are kept, the others filled",
         _inpaint_arguments, _inpaint),
        ("img2img", "noise image files part-way and denoise them with an exported model (SDEdit)",
         "SDEdit with an export (kdiff.img2img): each image is noised to the level at --strength of the "
         "sampler's steps and the remaining steps are run", _img2img_arguments, _img2img),
    )
    for name, summary, description, add_own, handler in edits:
        command = commands.add_parser(name, help=summary, description=f"{description}; one PNG per image in --out.")
        _edit_arguments(command)
        add_own(command)
        command.set_defaults(run=handler)
    return parser


def _inpaint_arguments(command):
    """``inpaint``'s own arguments: the mask and RePaint's resampling."""
    command.add_argument(
        "--mask", required=True, metavar="FILE",
        help="a black-and-white picture of the images' size: white (255) = known, kept; black (0) = to fill",
    )
    command.add_argument(
        "--mask_convention", choices=("known", "repaint"), default="known",
        help="what white marks: 'known' (default) or 'repaint' (diffusers' masks: white = to repaint)",
    )
    command.add_argument("--resample", type=_int_at_least(1), default=1,
                         help="RePaint's resampling passes per jump (default 1: none)")
    command.add_argument("--jump_length", type=_int_at_least(1), default=10,
                         help="RePaint's jump length in steps (default 10; used with --resample > 1)")


def _img2img_arguments(command):
    """``img2img``'s own argument: the strength."""
    command.add_argument(
        "--strength", required=True, type=_argument_type(float, _unit_interval, "a number in [0, 1]"),
        help="0: the input unchanged; 1: a new sample; int(steps * strength) steps are run",
    )


def _unit_interval(value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected a number in [0, 1]. Received: {value!r}")
    return value


def _edit_arguments(command):
    """The arguments ``inpaint`` and ``img2img`` share."""
    from kdiff.samplers import registry

    command.add_argument("--model", metavar="PATH", default=None, help="the export's directory (required)")
    # Deprecated: the export as a positional argument (documented until this release); still
    # read, with a warning, for one release. Not in --help or usage: --model is the one way.
    command.add_argument("positional_model", nargs="?", metavar="EXPORT_DIR", help=argparse.SUPPRESS)
    command.add_argument("--image", required=True, nargs="+", metavar="FILE",
                         help="image files of the model's size and channels (PNG, JPEG, ...)")
    command.add_argument("--out", required=True, metavar="DIR",
                         help="the folder to write <image name>.png into (created if its parent exists)")
    command.add_argument("--sampler", choices=registry.names(), default=None, help="the sampler (default: the model's)")
    command.add_argument("--steps", type=_int_at_least(1), default=None, help="sampling steps (default: the sampler's)")
    command.add_argument("--seed", type=_int_at_least(0), default=0, help="same seed, same images (default 0)")
    command.add_argument("--batch_size", type=_int_at_least(1), default=None, help="images per batch (default 64)")
    command.add_argument(
        "--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
        help="a sampler option, e.g. --option eta=0.5 (repeatable; JSON values)",
    )
    command.add_argument("--no_clip", action="store_true", help="do not clip the predicted x0 to the data range")
    command.add_argument("--class_label", type=_int_at_least(0), default=None,
                         help="one class for every image (class-conditional models)")


def _read_config(parser, path, check_process=True):
    """The export's config.json; exit 2 naming --model when ``path`` is no kdiff export (with
    the ``kdiff convert`` command when it is a checkpoint that ``convert`` reads).

    ``check_process``: also check that its process builds (``kdiff.export.read_config``,
    which imports TensorFlow); otherwise ``kdiff.export_config.read_config``.
    """
    if check_process:
        from kdiff.export import read_config
    else:
        from kdiff.export_config import read_config

    try:
        return read_config(path)
    except ValueError as error:
        hint = _conversion_hint(path)
        if hint is not None:  # one line: not a usage error, so no usage text
            parser.exit(2, f"{parser.prog}: error: argument --model: {hint}\n")
        parser.error(f"argument --model: {error}")


def _diffusers_evidence(folder):
    """What marks ``folder`` as a diffusers checkpoint.

    Args:
        folder: an existing directory.

    Returns:
        The marking file's name (``model_index.json``, ``unet/config.json``, a
        ``diffusion_pytorch_model.*`` file, or a UNet2DModel's ``config.json``), or None.
    """
    for name in ("model_index.json", os.path.join("unet", "config.json")):
        if os.path.isfile(os.path.join(folder, name)):
            return name
    try:
        weights = sorted(n for n in os.listdir(folder) if n.startswith("diffusion_pytorch_model."))
    except OSError:  # an unreadable folder: read_config's own error says enough
        return None
    if weights:
        return weights[0]
    config = os.path.join(folder, "config.json")
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as file:
                name = json.load(file).get("_class_name")
        except (OSError, ValueError, AttributeError):
            return None
        if name == "UNet2DModel":
            return "config.json of a UNet2DModel"
    return None


def _foreign_checkpoint(path):
    """A checkpoint ``kdiff convert`` reads, at ``path``.

    Args:
        path: what ``--model`` was given.

    Returns:
        ``(kind, evidence, src)``: the ``--from`` kind ("diffusers" or "ncsn"), what was
        found, and the SRC to convert; or None.
    """
    if os.path.isfile(path):
        return ("ncsn", "a PyTorch .pth checkpoint", path) if path.endswith(".pth") else None
    if not os.path.isdir(path):
        return None
    evidence = _diffusers_evidence(path)
    if evidence is not None:
        return "diffusers", evidence, path
    checkpoint = os.path.join(path, "checkpoint.pth")
    if os.path.isfile(checkpoint):
        return "ncsn", "checkpoint.pth", checkpoint
    return None


def _conversion_hint(path):
    """The message for a ``--model`` that is a checkpoint ``kdiff convert`` reads.

    Args:
        path: what ``--model`` was given.

    Returns:
        One line: what was found and the ``kdiff convert`` command (its ``--out`` beside
        ``path``), then the ``--model`` to pass; None for anything else.
    """
    import shlex

    found = _foreign_checkpoint(path)
    if found is None:
        return None
    kind, evidence, src = found
    out = (os.path.normpath(path) if os.path.isdir(path) else os.path.splitext(path)[0]) + "_kdiff"
    command = f"kdiff convert --from {kind} {shlex.quote(src)} --out {shlex.quote(out)}"
    if kind == "ncsn":
        command += " [--config celeba|cifar10|mnist]"
    what = "a diffusers checkpoint" if kind == "diffusers" else "an ermongroup/ncsn checkpoint"
    return (f"expected a kdiff export; {path!r} is {what} ({evidence}). Convert it first: {command}, "
            f"then pass --model {shlex.quote(out)}")


def _check_out(parser, flag, path):
    if path is None:
        return
    if os.path.isdir(path):
        parser.error(f"argument {flag}: {path!r} is a directory; expected a picture file such as grid.png")
    # Checked before sampling, so that minutes of sampling are not lost to an unwritable path;
    # folders are not created: a typo must not leave new directories behind.
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(f"argument {flag}: the folder {folder!r} does not exist; create it first or pass another path")
    target = path if os.path.exists(path) else folder
    if not os.access(target, os.W_OK):
        parser.error(f"argument {flag}: {target!r} is not writable (read-only or no permission)")


def _last_line(error):
    """An error's own message, without the traceback TF adds when it is raised while tracing."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else repr(error)
    return last.split(": ", 1)[1] if last.startswith("ValueError: ") else last


def summarized(value, length=SUMMARY_LENGTH):
    """``value`` with every list longer than ``length`` replaced by its count, first and last value.

    Args:
        value: a config (JSON types).
        length: the longest list kept as it is.

    Returns:
        A copy, e.g. a schedule's 1,000 ``betas`` as ``"1000 values, 0.0001 … 0.02"``.
    """
    if isinstance(value, dict):
        return {key: summarized(item, length) for key, item in value.items()}
    if not isinstance(value, list):
        return value
    if len(value) <= length:
        return [summarized(item, length) for item in value]
    first, last = (format(v, ".6g") if isinstance(v, float) else json.dumps(v) for v in (value[0], value[-1]))
    return f"{len(value)} values, {first} … {last}"


def _info(args, parser):
    config = _read_config(parser, args.model, check_process=False)
    source = config.get("source")
    if isinstance(source, dict):  # a converted model: where it came from, first
        config = {"source": source, **{k: v for k, v in config.items() if k != "source"}}
    json.dump(config if args.full else summarized(config), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


# The sampler options that have flags of their own.
_OPTION_FLAGS = {"eta": "--eta", "clip_x0": "--no_clip"}


def _request_flag(args, error):
    """The flag a refused sampling request comes from (``kdiff.samplers.request.RequestError``)."""
    if error.argument == "options":
        flags = {_OPTION_FLAGS.get(name, "--option") for name in error.options}
        return "/".join(sorted(flags)) or "--option"
    if error.argument == "steps" and args.steps is None and args.recipe:
        return "--recipe"
    return f"--{error.argument}"


def _sample(args, parser):
    config = _read_config(parser, args.model)
    _check_out(parser, "--out", args.out)
    _check_out(parser, "--trajectory", args.trajectory)
    if args.trajectory is not None and os.path.abspath(args.trajectory) == os.path.abspath(args.out):
        parser.error("argument --trajectory: the same file as --out")
    from kdiff.process import from_model_config
    from kdiff.samplers import request

    process = from_model_config(config, f"export config of {args.model!r}")
    options = dict(args.option)
    if args.eta != 0.0:
        options["eta"] = args.eta  # a sampler option: refused below by samplers without one
    if args.no_clip:
        options["clip_x0"] = None
    try:  # before the model loads: the request check kdiff.sample makes again
        request.resolve(process, args.sampler, args.steps, options, args.recipe, default_sampler=config.get("default_sampler"),
                        sampler_defaults=config.get("sampler_defaults"))
    except request.RequestError as error:
        parser.error(f"argument {_request_flag(args, error)}: {error}")
    num_classes = config.get("num_classes")
    if args.class_label is not None:
        if num_classes is None:
            parser.error("argument --class_label: the model is not class-conditional")
        if args.class_label >= num_classes:
            parser.error(f"argument --class_label: expected a class in [0, {num_classes - 1}], got {args.class_label}")
    if args.guidance_scale is not None:
        if num_classes is None:
            parser.error("argument --guidance_scale: the model is not class-conditional")
        if config.get("null_label") is None:
            parser.error(
                "argument --guidance_scale: the model has no null class (export a model whose network has "
                "num_classes + 1 classes, trained with label dropout)"
            )

    import kdiff
    from kdiff import failures
    from kdiff import images as images_lib

    try:
        result = kdiff.sample(
            args.model,
            args.num,
            sampler=args.sampler,
            steps=args.steps,
            recipe=args.recipe,
            seed=args.seed,
            batch_size=args.batch_size,
            return_trajectory=args.trajectory is not None,
            class_labels=args.class_label,
            guidance_scale=args.guidance_scale,
            progress=True,
            **options,
        )
    except ValueError as error:  # arguments that do not fit the model or sampler
        parser.error(_last_line(error))
    except FloatingPointError as error:
        print(f"kdiff sample: {error}", file=sys.stderr)
        return 1
    samples, trajectory = result if args.trajectory is not None else (result, None)
    try:
        images_lib.save_grid(samples, args.out, nrow=args.nrow, scale=args.scale)
        print(f"wrote {args.out}: {len(samples)} images of {'x'.join(map(str, samples.shape[1:]))}")
        if trajectory is not None:
            images_lib.save_trajectory(trajectory, args.trajectory, num_frames=args.frames, scale=args.scale)
            print(f"wrote {args.trajectory}: {trajectory.shape[1]} rows of {min(args.frames, trajectory.shape[0])} states")
    except Exception as error:  # a full disk, or the path changed while sampling
        failure = failures.find_io_error(error)
        if failure is None:
            raise
        print(f"kdiff sample: cannot write {failure.path or args.out}: {failure.cause}", file=sys.stderr)
        return 1
    return 0


def _check_export_target(parser, path, overwrite):
    """``--out`` of ``convert``: a new or empty directory (or --overwrite) in an existing folder."""
    if os.path.lexists(path) and not overwrite:
        if not os.path.isdir(path) or os.listdir(path):
            parser.error(f"argument --out: {path!r} exists and is not empty; pass --overwrite to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(f"argument --out: the folder {folder!r} does not exist; create it first or pass another path")
    if not os.access(folder, os.W_OK):
        parser.error(f"argument --out: {folder!r} is not writable (read-only or no permission)")


def _read_checkpoint(args):
    """The converted model and its provenance (``config.json``'s ``source``)."""
    if args.source_kind == "diffusers":
        from kdiff.convert import diffusers

        if args.config is not None:
            raise ValueError(f"Expected --config only with --from ncsn. Received: --config={args.config}")
        model = diffusers.from_diffusers(args.src, scheduler=args.scheduler, revision=args.revision)
        return model, diffusers.describe_source(args.src, scheduler=args.scheduler, revision=args.revision)
    from kdiff.convert import ncsn

    for flag in ("revision", "scheduler"):
        if getattr(args, flag) is not None:
            raise ValueError(f"Expected --{flag} only with --from diffusers. Received: --{flag}={getattr(args, flag)}")
    model = ncsn.from_ncsn_checkpoint(args.src, config=args.config)
    return model, ncsn.describe_source(args.src, model)


def _check_scheduler(parser, value):
    """``--scheduler`` of ``convert``: a scheduler class name, or a file or folder that exists."""
    from kdiff.convert.diffusers import SCHEDULER_NAMES

    if value is None or value in SCHEDULER_NAMES or os.path.exists(value):
        return
    parser.error(
        f"argument --scheduler: expected a scheduler_config.json, its folder or one of {list(SCHEDULER_NAMES)}; "
        f"got {value!r} (no such file)"
    )


def _convert(args, parser):
    _check_export_target(parser, args.out, args.overwrite)
    _check_scheduler(parser, args.scheduler)
    from kdiff import export, failures
    from kdiff.samplers import recipes

    try:
        model, source = _read_checkpoint(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        parser.error(f"argument SRC: {_last_line(error)}")
    name = args.recipe or recipes.default_for(model.process.kind)
    try:
        recipes.check_fits(name, model.process)
    except ValueError as error:
        parser.error(f"argument --recipe: {error}")
    recipe = recipes.get(name)
    limit = model.process.max_steps
    if limit is not None and recipe.steps > limit:
        parser.error(
            f"argument --recipe: {name!r} takes {recipe.steps} steps; this model has "
            f"{model.process.steps_name}={limit}; choose one of {recipes.names(model.process.kind)}"
        )
    source["generate_recipe"] = name
    try:
        path = export.export(
            model, args.out, sampler=recipe.sampler, sampler_options=dict(recipe.options),
            default_steps=recipe.steps, overwrite=args.overwrite, source=source,
        )
    except ValueError as error:  # a target written meanwhile
        parser.error(f"argument --out: {_last_line(error)}")
    except OSError as error:
        failure = failures.find_io_error(error)
        print(f"kdiff convert: cannot write {args.out}: {failure.cause if failure else error}", file=sys.stderr)
        return 1
    print(f"wrote {path}: a {model.family} model from {source['kind']} {source['path']} "
          f"(generate: recipe {name}, {recipe.sampler})")
    return 0


def _edit_model(args, parser):
    """The export of ``inpaint`` / ``img2img`` (``--model``; the deprecated positional
    EXPORT_DIR still read, with a warning on stderr) and its config."""
    path, positional = args.model, args.positional_model
    if positional is not None:
        print(f"{parser.prog}: warning: the export as a positional argument is deprecated and will be removed "
              f"in the next release; pass --model {positional}", file=sys.stderr)
        if path is not None and os.path.abspath(path) != os.path.abspath(positional):
            parser.error(f"argument --model: {path!r} differs from the positional export {positional!r}; give one")
        path = positional
    if not path:
        parser.error("the following arguments are required: --model")
    return path, _read_config(parser, path)


def _edit_out(parser, out, images):
    """``--out``: a folder (or one to create in an existing folder), and a PNG name per image."""
    if os.path.exists(out) and not os.path.isdir(out):
        parser.error(f"argument --out: {out!r} is a file; expected a folder")
    folder = out if os.path.isdir(out) else os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        parser.error(f"argument --out: the folder {folder!r} does not exist; create it first or pass another path")
    if not os.access(folder, os.W_OK):
        parser.error(f"argument --out: {folder!r} is not writable (read-only or no permission)")
    names = [os.path.splitext(os.path.basename(path))[0] + ".png" for path in images]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        parser.error(f"argument --image: several images would be written as {repeated} in --out; rename them")
    return [os.path.join(out, name) for name in names]


def _read_pictures(parser, flag, paths, shape):
    """The image files as uint8 [N, H, W, C], each checked against the model's (H, W, C)."""
    import numpy as np

    from kdiff import images as images_lib

    pictures = []
    for path in paths:
        try:
            picture = images_lib.read_image(path, shape[2])
        except ValueError as error:
            parser.error(f"argument {flag}: {error}")
        if picture.shape[:2] != tuple(shape[:2]):
            parser.error(
                f"argument {flag}: {path!r} is {picture.shape[1]}x{picture.shape[0]} pixels; the model takes "
                f"{shape[1]}x{shape[0]} (resize it first: nothing is resized here)"
            )
        pictures.append(picture)
    return np.stack(pictures)


def _read_mask(parser, path, shape):
    """``--mask``: a black-and-white picture of the images' size, as 0/1 [H, W]."""
    import numpy as np

    from kdiff import images as images_lib

    try:
        picture = images_lib.read_image(path)
    except ValueError as error:
        parser.error(f"argument --mask: {error}")
    gray = picture[..., :3].max(axis=-1) if picture.shape[-1] > 1 else picture[..., 0]
    if gray.shape != tuple(shape[:2]):
        parser.error(f"argument --mask: {path!r} is {gray.shape[1]}x{gray.shape[0]} pixels; the images are "
                     f"{shape[1]}x{shape[0]}")
    grey = np.unique(gray[(gray != 0) & (gray != 255)])
    if grey.size:
        parser.error(f"argument --mask: {path!r} has values other than black (0) and white (255), "
                     f"e.g. {grey[:3].tolist()}; expected a hard mask")
    return (gray == 255).astype(np.float32)


def _edit(args, parser, make_run, name):
    """Runs kdiff.inpaint or img2img on the image files and writes one PNG per image.

    Args:
        args, parser: the subcommand's arguments and parser (errors exit with status 2).
        make_run: ``make_run(shape) -> run(model, pictures, **options)``, given the model's
            image shape (it reads its own inputs: the mask).
        name: the subcommand, for messages.
    """
    path, config = _edit_model(args, parser)
    shape = tuple(config["image_shape"])
    targets = _edit_out(parser, args.out, args.image)
    pictures = _read_pictures(parser, "--image", args.image, shape)
    run = make_run(shape)
    options = dict(args.option)
    if args.no_clip:
        options["clip_x0"] = None
    if args.class_label is not None:
        num_classes = config.get("num_classes")
        if num_classes is None or args.class_label >= num_classes:
            parser.error(f"argument --class_label: the model takes classes in [0, {(num_classes or 0) - 1}]"
                         if num_classes else "argument --class_label: the model is not class-conditional")
    from kdiff import failures
    from kdiff import images as images_lib

    try:
        result = run(path, pictures, sampler=args.sampler, steps=args.steps, seed=args.seed,
                     batch_size=args.batch_size, class_labels=args.class_label, **options)
    except ValueError as error:
        parser.error(_last_line(error))
    except FloatingPointError as error:
        print(f"kdiff {name}: {error}", file=sys.stderr)
        return 1
    try:
        os.makedirs(args.out, exist_ok=True)
        for image, target in zip(result, targets):
            images_lib.save_image(image, target)
    except OSError as error:
        failure = failures.find_io_error(error)
        print(f"kdiff {name}: cannot write {failure.path or args.out}: {failure.cause}", file=sys.stderr)
        return 1
    print(f"wrote {len(targets)} images to {args.out}")
    return 0


def _inpaint(args, parser):
    import kdiff

    def make_run(shape):
        mask = _read_mask(parser, args.mask, shape)
        return lambda model, pictures, **options: kdiff.inpaint(
            model, pictures, mask, mask_convention=args.mask_convention, resample=args.resample,
            jump_length=args.jump_length, **options,
        )

    return _edit(args, parser, make_run, "inpaint")


def _img2img(args, parser):
    import kdiff

    def make_run(shape):
        return lambda model, pictures, **options: kdiff.img2img(model, pictures, args.strength, **options)

    return _edit(args, parser, make_run, "img2img")


def parse(argv=None):
    """Parses ``kdiff``'s arguments without importing TensorFlow.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        ``(parser, args)``. ``--help`` and usage errors exit here (``SystemExit``, status 0
        or 2, the message on stderr).
    """
    parser = build_parser()
    return parser, parser.parse_args(argv)


def run(parser, args):
    """Runs the subcommand ``parse`` returned; returns the exit status."""
    sub = parser._subparsers._group_actions[0].choices[args.command]  # errors name the subcommand
    return args.run(args, sub)


def main(argv=None):
    """Runs ``kdiff`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    The console script starts in ``kdiff_console.kdiff_main``, which parses first and then
    hides TensorFlow's start-up logs (unless ``--verbose``) for the commands that import it.

    Usage errors raise ``SystemExit(2)`` through argparse, with the message on stderr.
    """
    return run(*parse(argv))


if __name__ == "__main__":
    sys.exit(main())
