"""kdiff: a Keras 3 / TensorFlow library and a Beam pipeline for diffusion models."""

from setuptools import find_packages, setup

DOCS = ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"]
S3 = ["boto3>=1.35"]

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
    # kdiff's and kdiff.samplers' public names, read at import (kdiff._lazy.attach_stub)
    package_data={"kdiff": ["__init__.pyi"], "kdiff.samplers": ["__init__.pyi"]},
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
        # moto_server: the S3 server on 127.0.0.1 the object-store tests start
        "test": ["pytest>=8", "pytest-xdist>=3.5", *DOCS, *S3, "moto[server]>=5"],
        # the MkDocs site under docs/ (mkdocs.yml): `mkdocs build --strict`, `mkdocs serve`
        "docs": DOCS,
        # --output_dir=s3://bucket/run: the pipeline's S3 store (conditional puts: botocore >= 1.35)
        "s3": S3,
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
