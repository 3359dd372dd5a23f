"""The kdiff pipeline: ``python -m pipeline.run --runner=DirectRunner``.

ingest → train → sample → evaluate → retrieve → report, each stage writing to
``<output_dir>/<stage>/`` with a fingerprint of its parameters and inputs: a rerun skips
completed stages whose fingerprint matches (TFX-style caching), ``--force`` reruns them.
Our own flags (every ``RunConfig`` field, ``--config``, ``--preset``, ``--output_dir``,
``--force``, ``--stages``) are split from Beam's pipeline flags (``--runner``,
``--direct_num_workers``, ``--direct_running_mode``, Dataflow / Flink / Spark options),
which are passed to the Beam stages untouched.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib
import json
import logging
import os
import shutil
import sys
import time

from pipeline import config as config_lib
from pipeline.stages.base import DONE_FILE, StageError, fingerprint, read_done, write_json

STAGE_ORDER = ("ingest", "train", "sample", "evaluate", "retrieve", "report")

# Where each artifact lives under output_dir.
ARTIFACT_PATHS = {
    "examples": ("ingest", "examples"),
    "model": ("train", "model"),
    "samples": ("sample", "samples"),
    "metrics": ("evaluate", "metrics"),
    "retrieval": ("retrieve", "retrieval"),
    "report": ("report", "report"),
}


def _field_type(field):
    hint = field.type if not isinstance(field.type, str) else field.type
    text = str(hint)
    if "dict" in text:
        return json.loads
    if "int" in text and "Optional" in text:
        return lambda v: None if v.lower() == "none" else int(v)
    if "int" in text:
        return int
    if "float" in text:
        return float
    return lambda v: None if v.lower() == "none" else v


def build_parser():
    """The argument parser of our own flags (Beam's are left for PipelineOptions)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.run",
        description="kdiff pipeline: ingest → train → sample → evaluate → retrieve → report on Apache Beam.",
    )
    parser.add_argument("--output_dir", default="runs/default", help="where each stage writes (default runs/default)")
    parser.add_argument("--preset", default="default", choices=sorted(config_lib.PRESETS), help="a named config")
    parser.add_argument("--config", default=None, help="a JSON file of RunConfig fields (flags override it)")
    parser.add_argument("--force", action="store_true", help="rerun stages even when their outputs are cached")
    parser.add_argument(
        "--stages", default=",".join(STAGE_ORDER),
        help=f"comma-separated stages to run, in order, from {','.join(STAGE_ORDER)}",
    )
    for field in dataclasses.fields(config_lib.RunConfig):
        parser.add_argument(f"--{field.name}", type=_field_type(field), default=None, help=argparse.SUPPRESS)
    return parser


def make_config(known):
    """The effective RunConfig: preset, then the --config file, then flags."""
    values = {}
    if known.config:
        values.update(json.loads(open(known.config, encoding="utf-8").read()))
    for field in dataclasses.fields(config_lib.RunConfig):
        value = getattr(known, field.name)
        if value is not None:
            values[field.name] = value
    return config_lib.preset(known.preset, **values)


def _stage_module(name):
    return importlib.import_module(f"pipeline.stages.{name}")


def _artifact_dir(output_dir, artifact):
    stage, name = ARTIFACT_PATHS[artifact]
    return os.path.join(output_dir, stage, name)


def run_stages(config, output_dir, beam_args, *, force=False, stages=STAGE_ORDER):
    """Runs the stages in order, skipping cached ones.

    Args:
        config: the ``RunConfig``.
        output_dir: the run's directory.
        beam_args: Beam pipeline flags for the Beam stages.
        force: rerun cached stages.
        stages: the stages to run (upstream artifacts must exist for the others).

    Returns:
        A dict stage → {"cached": bool, "seconds": float, "fingerprint": str}.
    """
    os.makedirs(output_dir, exist_ok=True)
    write_json(os.path.join(output_dir, "config.json"), config.to_dict())
    fingerprints, summary = {}, {}
    for name in STAGE_ORDER:
        module = _stage_module(name)
        spec = module.SPEC
        params = config.section(spec.parameters)
        inputs = {artifact: _artifact_dir(output_dir, artifact) for artifact in spec.inputs}
        outputs = {artifact: _artifact_dir(output_dir, artifact) for artifact in spec.outputs}
        upstream = {artifact: fingerprints.get(ARTIFACT_PATHS[artifact][0]) for artifact in spec.inputs}
        for artifact, value in list(upstream.items()):
            if value is None:
                done = read_done(os.path.dirname(inputs[artifact]))
                upstream[artifact] = done and done.get("fingerprint")
        stamp = fingerprint(spec, params, upstream)
        stage_dir = os.path.join(output_dir, name)
        done = read_done(stage_dir)
        cached = (
            done is not None
            and done.get("fingerprint") == stamp
            and all(os.path.isdir(path) for path in outputs.values())
        )
        if name not in stages or (cached and not force):
            if not cached:
                missing = [a for a, p in outputs.items() if not os.path.isdir(p)]
                if any(n in stages for n in STAGE_ORDER[STAGE_ORDER.index(name) + 1 :]) and missing:
                    raise StageError(
                        f"{name}: not selected in --stages and no cached output at {stage_dir}; "
                        f"run it first (add it to --stages)."
                    )
            else:
                print(f"[{name}] cached ({stamp}); --force reruns it", flush=True)
            fingerprints[name] = stamp if cached else (done or {}).get("fingerprint")
            summary[name] = {"cached": True, "seconds": 0.0, "fingerprint": fingerprints[name]}
            continue
        for artifact, path in inputs.items():
            if not os.path.isdir(path):
                raise StageError(f"{name}: its input {artifact} is missing at {path}; run the stages before it.")
        for path in outputs.values():  # what a killed earlier attempt left behind
            for leftover in glob.glob(os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-*")):
                shutil.rmtree(leftover, ignore_errors=True)
        print(f"[{name}] running", flush=True)
        start = time.perf_counter()
        done_path = os.path.join(stage_dir, DONE_FILE)
        if os.path.exists(done_path):
            os.remove(done_path)  # the old outputs no longer match what is being written
        params = dict(params, beam_args=list(beam_args), data_range=list(config.data_range))
        module.Executor().Do(inputs, outputs, params)
        seconds = time.perf_counter() - start
        write_json(done_path, {"fingerprint": stamp, "seconds": seconds, "outputs": outputs})
        fingerprints[name] = stamp
        summary[name] = {"cached": False, "seconds": seconds, "fingerprint": stamp}
        print(f"[{name}] done in {seconds:.1f} s", flush=True)
    return summary


def _headline(output_dir):
    path = os.path.join(_artifact_dir(output_dir, "report"), "metrics.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    report = os.path.join(_artifact_dir(output_dir, "report"), "report.html")
    print(f"\nReport: {os.path.abspath(report)}")
    print(f"Feature space: {summary.get('feature_space')}")
    for name, row in summary.get("samplers", {}).items():
        fid, seconds, conf = row.get("fid"), row.get("seconds"), row.get("classifier_confidence")
        print(
            f"  {name:>20s}: FID {fid if fid is None else round(fid, 3)}  "
            f"time {seconds if seconds is None else round(seconds, 1)} s  "
            f"classifier confidence {conf if conf is None else round(conf, 3)}"
        )
    def rounded(value):
        return None if value is None else round(value, 3)

    base = summary.get("baseline_gaussian", {})
    real = summary.get("real_heldout", {})
    print(
        f"  {'held-out real':>20s}: FID {rounded(real.get('fid'))}  "
        f"classifier confidence {rounded(real.get('classifier_confidence'))}"
    )
    print(
        f"  {'Gaussian baseline':>20s}: FID {rounded(base.get('fid'))}  "
        f"classifier confidence {rounded(base.get('classifier_confidence'))}"
    )


def run(argv=None, save_main_session=True):
    """Parses flags, runs the stages, prints where the report is and the headline numbers.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when None).
        save_main_session: passed to Beam's options (pickles the main session for workers).

    Returns:
        The process exit code: 0 on success, 1 on a stage error.
    """
    logging.getLogger().setLevel(logging.ERROR)  # Beam's optional-GCP import warnings
    parser = build_parser()
    known, beam_args = parser.parse_known_args(argv)
    stages = tuple(s.strip() for s in known.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGE_ORDER]
    if unknown:
        parser.error(f"argument --stages: unknown stage(s) {unknown}; expected names from {list(STAGE_ORDER)}")
    try:
        config = make_config(known)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    if not any(arg.startswith("--runner") for arg in beam_args):
        beam_args = ["--runner=DirectRunner"] + list(beam_args)
    if save_main_session:
        beam_args = list(beam_args) + ["--save_main_session"]
    try:
        run_stages(config, known.output_dir, beam_args, force=known.force, stages=stages)
    except StageError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    _headline(known.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(run())
