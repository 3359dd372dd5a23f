"""Entry point of the kdiff pipeline: ``python -m pipeline.run --runner=DirectRunner``.

The stages (ingest, train, sample, evaluate, retrieve, report) are not built yet; until
they are, this command checks its flags the way the pipeline will (Beam's
``PipelineOptions`` plus our own flags, split with ``parse_known_args``) and says so.
"""

from __future__ import annotations

import argparse
import logging
import sys


def parse_args(argv=None):
    """Splits our own flags from Beam's pipeline flags.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when None).

    Returns:
        ``(known_args, beam_args)``.
    """
    parser = argparse.ArgumentParser(prog="python -m pipeline.run", description=__doc__)
    parser.add_argument("--output_dir", default="runs/default", help="where each stage writes")
    return parser.parse_known_args(argv)


def run(argv=None, save_main_session=True):
    """Runs the pipeline (not built yet: prints what exists and returns 0)."""
    logging.getLogger().setLevel(logging.ERROR)  # Beam's optional-GCP import warnings
    from apache_beam.options.pipeline_options import PipelineOptions

    known, beam_args = parse_args(argv)
    options = PipelineOptions(beam_args, save_main_session=save_main_session)
    runner = options.get_all_options().get("runner") or "DirectRunner"
    print(
        "kdiff pipeline: the stages (ingest, train, sample, evaluate, retrieve, report) are "
        f"not built yet. Runner: {runner}; output_dir: {known.output_dir}.\n"
        "The library is: see README.md, 'Library quick tour' "
        "(e.g. python -m kdiff.benchmark)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(run())
