"""`mnist-pipeline repeat`: bad input refused in one line before any training."""

from __future__ import annotations

from fixtures.tiny_store import run_cli


def test_bad_input_is_one_error_line_before_any_training(tmp_path, mlflow_store, capsys):
    assert run_cli("repeat", "--seeds", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--seeds 1" in err[0]
    bad = tmp_path / "params.yaml"
    bad.write_text("base: {seed: 1}\n")
    assert run_cli("repeat", "--seeds", "3", params=bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "params.yaml" in err[0]
