"""fetch: the stage writes verified arrays, and nothing unverified is ever written."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import save_npz, write_params
from mnist_pipeline.errors import PipelineError
from stages import fetch


def test_main_writes_verified_npz_from_a_file(tiny_mnist, tmp_path, params_tree):
    source = save_npz(tmp_path / "mine.npz", tiny_mnist)
    params_tree["fetch"] = {"source": "file", "path": str(source)}
    params = write_params(tmp_path / "params.yaml", params_tree)
    out = tmp_path / "raw" / "mnist.npz"
    fetch.main(["--params", str(params), "--out", str(out)])
    with np.load(out) as written:
        np.testing.assert_array_equal(written["x_test"], tiny_mnist.x_test)
    assert [p.name for p in out.parent.iterdir()] == ["mnist.npz"]


def test_main_writes_nothing_for_bad_data(tiny_mnist, tmp_path, params_tree):
    corrupted = tiny_mnist._replace(y_test=(tiny_mnist.y_test + 1) % 10)
    source = save_npz(tmp_path / "bad.npz", corrupted)
    params_tree["fetch"] = {"source": "file", "path": str(source)}
    params = write_params(tmp_path / "params.yaml", params_tree)
    out = tmp_path / "raw" / "mnist.npz"
    out.parent.mkdir()
    out.write_bytes(b"stale output from an earlier run")
    with pytest.raises(PipelineError, match="y_test SHA-256"):
        fetch.main(["--params", str(params), "--out", str(out)])
    assert list(out.parent.iterdir()) == []


def test_missing_local_file_is_a_clear_error(tmp_path, params_tree):
    params_tree["fetch"] = {"source": "file", "path": str(tmp_path / "nowhere.npz")}
    params = write_params(tmp_path / "params.yaml", params_tree)
    with pytest.raises(PipelineError, match="does not exist"):
        fetch.main(["--params", str(params), "--out", str(tmp_path / "out.npz")])
