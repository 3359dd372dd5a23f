"""What a run reads from an object store besides its data: ``--model_source`` folders and
checkpoints, ``--fid_weights`` / ``--inception_weights`` files. Each is copied to the machine
that needs it (the launcher for an import, each Beam worker for an extractor) and gives the
same result as the local file."""

import contextlib
import os
import uuid

import numpy as np
import pytest

from paths import FIXTURES
from pipeline import features, imports, io
from pipeline.stages import evaluate
from pipeline.stages.base import StageError

DDPM_PIPELINE = os.path.join(FIXTURES, "diffusers", "ddpm_pipeline")


@pytest.fixture
def root(s3_server):
    """A fresh prefix in the test bucket."""
    return f"{s3_server}/{uuid.uuid4().hex[:12]}"


def test_a_diffusers_folder_in_the_bucket_imports_as_the_local_one(root):
    url = io.join(root, "ddpm_pipeline")
    io.copy_tree(DDPM_PIPELINE, url)
    local, local_source = imports.import_model(f"diffusers:{DDPM_PIPELINE}", (16, 16, 3), seed=3)
    remote, remote_source = imports.import_model(f"diffusers:{url}", (16, 16, 3), seed=3)
    for a, b in zip(local.network.get_weights(), remote.network.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert remote_source["path"] == url  # the provenance names the URL, not the temporary copy
    assert remote_source["scheduler_source"] == f"{url}/scheduler/scheduler_config.json"
    assert remote_source["config"] == local_source["config"]
    assert imports.missing(f"diffusers:{url}") is None
    assert "no file or folder" in imports.missing(f"diffusers:{root}/nothing-here")


def test_a_spec_file_in_the_bucket_is_copied_for_the_worker(root, tmp_path):
    url = io.join(root, "weights.npz")
    io.write_bytes(url, b"weights")
    spec = {"kind": "fid_inception", "weights": url}
    with contextlib.ExitStack() as files:
        local = features.local_spec(spec, files)
        assert not io.is_remote(local["weights"]) and open(local["weights"], "rb").read() == b"weights"
        assert spec["weights"] == url  # the caller's spec is untouched
    assert not os.path.exists(local["weights"])  # the copy lives as long as the worker's stack


def test_a_download_the_worker_lacks_is_fetched_again(monkeypatch, tmp_path):
    fetched = tmp_path / "fetched.h5"
    monkeypatch.setattr(features, "resolve_inception_weights", lambda weights: str(fetched))
    spec = {"kind": "inception_v3", "weights": "/launcher/cache/inception.h5", "source": "imagenet"}
    with contextlib.ExitStack() as files:
        assert features.local_spec(spec, files)["weights"] == str(fetched)
        given = {"kind": "inception_v3", "weights": "/nowhere/mine.h5", "source": "/nowhere/mine.h5"}
        assert features.local_spec(given, files) == given  # a user's own file is never replaced


def test_weight_urls_are_checked_before_the_stage_spends_time(root):
    weights = io.join(root, "inception.h5")
    with pytest.raises(StageError, match=r"--inception_weights=s3://.*inception.h5 does not exist"):
        evaluate.Executor._inception_spec("inception", {"inception_weights": weights})
    with pytest.raises(StageError, match=r"--fid_weights=s3://.*inception.h5 does not exist"):
        evaluate.Executor._inception_spec("fid_inception", {"fid_weights": weights})
    io.write_bytes(weights, b"h5")
    assert evaluate.Executor._inception_spec("inception", {"inception_weights": weights}) == {
        "kind": "inception_v3", "weights": weights, "source": weights,
    }
    assert evaluate.Executor._inception_spec("fid_inception", {"fid_weights": weights}) == {
        "kind": "fid_inception", "weights": weights,
    }
