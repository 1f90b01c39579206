"""End to end: `mnist-pipeline report` on two real commits of a throwaway pipeline repository
(main, and a branch with another learning rate), each run by `dvc repro` into a real store."""

from __future__ import annotations

import sys

import pytest
from fixtures.pipeline_repo import make_pipeline_repo, small_params

from mnist_pipeline.analysis.change_report import image_name

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def two_commits(tmp_path_factory, default_params, real_mnist) -> dict:
    params = small_params(default_params, train_samples=500, test_samples=200)
    params["fetch"] = {"source": "file", "path": str(real_mnist)}
    repo = make_pipeline_repo(tmp_path_factory.mktemp("report"), params)
    repo.run("dvc", "repro")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "first run")
    # Every PNG plot evaluate writes (the confusion matrix, the curves, and any added since).
    figures = sorted((repo.path / "reports").glob("*.png"))
    base_figures = {str(path.relative_to(repo.path)): path.read_bytes() for path in figures}
    repo.run("git", "checkout", "-qb", "faster")
    params["train"]["optimizer"]["learning_rate"] = 0.002
    repo.write_params(params)
    repo.run("dvc", "repro")
    repo.run("git", "commit", "-qam", "learning rate 0.002")
    return {"repo": repo, "base_figures": base_figures}


def test_report_shows_the_changed_param_both_runs_and_both_figures(two_commits):
    repo = two_commits["repo"]
    result = repo.run(sys.executable, "-m", "mnist_pipeline", "report", "--base", "main")
    folder = repo.path / "reports" / "change"
    markdown = (folder / "report.md").read_text()
    assert "reports/change/report.md: `workspace` against `main`" in result.stdout
    assert "| `train.optimizer.learning_rate` | 0.0010 | 0.0020 | +0.0010 |" in markdown
    old, new = sorted(repo.runs(), key=lambda run: run.info.start_time)
    accuracies = [f"{run.data.metrics['test_accuracy']:.4f}" for run in (old, new)]
    assert f"| `test_accuracy` | {accuracies[0]} | {accuracies[1]} |" in markdown
    for run, rev, accuracy in ((old, "main", accuracies[0]), (new, "workspace", accuracies[1])):
        run_id, group = run.info.run_id, run.data.tags["group"]
        link = f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run_id}"
        row = f"| `{rev}` | [{run_id[:8]}]({link}) | `{group}` | 1 | {accuracy} (one seed) |"
        assert row in markdown
    assert len(two_commits["base_figures"]) >= 2
    for path in two_commits["base_figures"]:
        base, workspace = (image_name(side, path) for side in ("base", "new"))
        assert f"![main: {path}]({base}) | ![workspace: {path}]({workspace})" in markdown
        assert (folder / base).read_bytes() == two_commits["base_figures"][path]
        assert (folder / workspace).read_bytes() == (repo.path / path).read_bytes()
        assert (folder / base).read_bytes() != (folder / workspace).read_bytes()
    assert not repo.run("git", "status", "--porcelain").stdout  # the report is git-ignored


@pytest.mark.parametrize(("base", "error"), [
    ("nosuch", "error: unknown Git revision 'nosuch': give a branch, tag or commit"),
    ("main~1", "error: no dvc.lock at main~1: nothing was run there; run `dvc repro` there"),
])
def test_a_bad_base_is_one_error_line_and_writes_nothing(two_commits, base, error):
    repo = two_commits["repo"]
    result = repo.run(sys.executable, "-m", "mnist_pipeline", "report", "--base", base,
                      "--output", "elsewhere", check=False)
    assert result.returncode == 2 and result.stderr.startswith(error), result.stderr
    assert "Traceback" not in result.stderr and not (repo.path / "elsewhere").exists()



def test_a_revision_against_itself_changed_no_param(two_commits, tmp_path):
    """DVC's diffs come back without their "diff" key when nothing differs."""
    repo = two_commits["repo"]
    output = tmp_path / "same"
    repo.run(sys.executable, "-m", "mnist_pipeline", "report", "--base", "main", "--rev", "main",
             "--output", str(output))
    markdown = (output / "report.md").read_text()
    assert "No params changed." in markdown and "| `test_accuracy` |" in markdown
