"""The ``kdiff`` console command.

    kdiff sample --model saved_models/digits --num 16 --sampler ddim --steps 50 --seed 0 \\
        --out grid.png [--trajectory trajectory.png]
    kdiff info --model saved_models/digits

``sample`` runs ``kdiff.sample`` on a directory written by ``kdiff.export.export`` and
writes a PNG grid of the images (and, with ``--trajectory``, a picture of the denoising
steps: one row per sample, ~10 evenly spaced states from noise to image). ``info``
prints the export's ``config.json``. Usage errors exit with status 2 and a message naming
the flag; nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main", "build_parser"]


def _int_at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def build_parser():
    """The argument parser of ``kdiff`` (subcommands ``sample`` and ``info``)."""
    from kdiff.sampling import SAMPLERS

    parser = argparse.ArgumentParser(prog="kdiff", description="Sample from exported kdiff diffusion models.")
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
        "--sampler", choices=sorted(SAMPLERS), default=None, help="the sampler (default: the model's)"
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
        "--class_label", type=_int_at_least(0), default=None, help="one class for every image (class-conditional models)"
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

    info = commands.add_parser("info", help="print an export's config.json", description="Print an export's config.json.")
    info.add_argument("--model", required=True, metavar="PATH", help="the export's directory")
    info.set_defaults(run=_info)
    return parser


def _read_config(parser, path):
    from kdiff import export

    try:
        return export.read_config(path)
    except ValueError as error:
        parser.error(f"argument --model: {error}")


def _check_out(parser, flag, path):
    if path is None:
        return
    if os.path.isdir(path):
        parser.error(f"argument {flag}: {path!r} is a directory; expected a picture file such as grid.png")


def _last_line(error):
    """An error's own message, without the traceback TF adds when it is raised while tracing."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else repr(error)
    return last.split(": ", 1)[1] if last.startswith("ValueError: ") else last


def _info(args, parser):
    config = _read_config(parser, args.model)
    json.dump(config, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _sample(args, parser):
    config = _read_config(parser, args.model)
    _check_out(parser, "--out", args.out)
    _check_out(parser, "--trajectory", args.trajectory)
    if args.trajectory is not None and os.path.abspath(args.trajectory) == os.path.abspath(args.out):
        parser.error("argument --trajectory: the same file as --out")
    if args.eta != 0.0 and (args.sampler or config.get("default_sampler")) != "ddim":
        parser.error(f"argument --eta: only with --sampler ddim (sampler: {args.sampler or config.get('default_sampler')})")
    sampler = args.sampler or config.get("default_sampler")
    from kdiff.sampling import SAMPLERS

    fitting = sorted(name for name, (_, kind) in SAMPLERS.items() if config.get(kind) is not None)
    if sampler not in fitting:
        parser.error(
            f"argument --sampler: {sampler!r} does not fit this {config.get('family')} model; choose one of {fitting}"
        )
    if args.steps is not None and sampler in ("ddim", "ddpm") and config.get("family") == "ddpm":
        from kdiff import schedules

        T = schedules.from_config(config["schedule"]).T
        if args.steps > T:
            parser.error(f"argument --steps: expected at most the model's T={T} steps for {sampler}, got {args.steps}")
    num_classes = config.get("num_classes")
    if args.class_label is not None:
        if num_classes is None:
            parser.error("argument --class_label: the model is not class-conditional")
        if args.class_label >= num_classes:
            parser.error(f"argument --class_label: expected a class in [0, {num_classes - 1}], got {args.class_label}")

    import kdiff
    from kdiff import images as images_lib

    try:
        result = kdiff.sample(
            args.model,
            args.num,
            sampler=args.sampler,
            steps=args.steps,
            eta=args.eta,
            seed=args.seed,
            batch_size=args.batch_size,
            return_trajectory=args.trajectory is not None,
            class_labels=args.class_label,
            progress=True,
        )
    except ValueError as error:  # arguments that do not fit the model or sampler
        parser.error(_last_line(error))
    except FloatingPointError as error:
        print(f"kdiff sample: {error}", file=sys.stderr)
        return 1
    samples, trajectory = result if args.trajectory is not None else (result, None)
    images_lib.save_grid(samples, args.out, nrow=args.nrow, scale=args.scale)
    print(f"wrote {args.out}: {len(samples)} images of {'x'.join(map(str, samples.shape[1:]))}")
    if trajectory is not None:
        images_lib.save_trajectory(trajectory, args.trajectory, num_frames=args.frames, scale=args.scale)
        print(f"wrote {args.trajectory}: {trajectory.shape[1]} rows of {min(args.frames, trajectory.shape[0])} states")
    return 0


def main(argv=None):
    """Runs ``kdiff`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Usage errors raise ``SystemExit(2)`` through argparse, with the message on stderr.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = parser._subparsers._group_actions[0].choices[args.command]  # errors name the subcommand
    return args.run(args, sub)


if __name__ == "__main__":
    sys.exit(main())
