# The SDK worker image of kdiff's Beam stages on Dataflow (or any portable runner that runs
# Docker environments): Beam's own Python SDK image with kdiff installed from this repository.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPOSITORY/kdiff-worker:TAG \
#     --build-arg BEAM_VERSION=$(python -c "import apache_beam; print(apache_beam.__version__)") .
#
# The image's Beam and Python must be the launcher's (the job's code is pickled by one and
# unpickled by the other): BEAM_VERSION's default is the Beam the tests run with
# (tests/pipeline/test_runners.py checks it), PYTHON_VERSION the launcher's major.minor.
# Then: python -m pipeline.run --runner=DataflowRunner --sdk_container_image=THAT_TAG …
# (docs/pipeline.md, "Running on Dataflow").
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.78.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}
ARG BEAM_VERSION

WORKDIR /opt/kdiff
COPY setup.py README.md kdiff_console.py ./
COPY kdiff/ kdiff/
COPY pipeline/ pipeline/
# kdiff and its object stores (s3://, gs://); Beam pinned to the image's own, so that pip keeps it
RUN pip install --no-cache-dir ".[aws,gcp]" "apache-beam[gcp]==${BEAM_VERSION}"

# Beam's SDK harness boot program, the base image's entry point, stated for the reader
ENTRYPOINT ["/opt/apache/beam/boot"]
