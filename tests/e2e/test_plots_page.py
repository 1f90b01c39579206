"""`dvc plots show` fills vega/plots.html, as .dvc/config says: Vega's scripts are inlined, so
the page loads nothing from the network and every plot renders offline (in a real headless
Chromium; the machines that run the tests have no route to a CDN)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e.test_ui import CHROMIUM_FLAGS, chromium  # noqa: F401 (chromium is a fixture)
from PIL import Image

from conftest import REPO_ROOT, git

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """The page `dvc plots show` writes for two tiny CSV plots and a PNG, in a repository with
    this one's DVC config and vega/ folder."""
    repo = tmp_path_factory.mktemp("plots")
    git(repo, "init", "--quiet")
    (repo / ".dvc").mkdir()
    shutil.copy2(REPO_ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(REPO_ROOT / "vega", repo / "vega")
    for name in ("loss.csv", "accuracy.csv"):
        (repo / name).write_text("epoch,value\n1,0.5\n2,0.75\n")
    Image.new("L", (28, 28), 255).save(repo / "digit.png")
    dvc = Path(sys.executable).with_name("dvc")
    command = [str(dvc), "plots", "show", "loss.csv", "accuracy.csv", "digit.png"]
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return repo / "dvc_plots" / "index.html"


def test_the_page_loads_no_script_from_the_network(page):
    html = page.read_text(encoding="utf-8")
    assert html.count("vegaEmbed('#") == 2
    assert (page.parent / "static" / "workspace_digit.png").is_file()
    assert not re.findall(r"<script[^>]*\ssrc\s*=", html), "every script is inlined"
    for package in ("vega@5", "vega-lite@5", "vega-embed@6"):
        assert f"<!-- {package}." in html


def test_every_plot_renders_offline_in_chromium(page, chromium, tmp_path):  # noqa: F811
    command = [
        *(chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path}"),
        *("--virtual-time-budget=10000", "--dump-dom", page.as_uri()),
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=180).stdout
    # vega-embed draws each plot on a canvas of class "marks"; a missing library draws none.
    assert len(re.findall(r'<canvas[^>]*class="marks"', dom)) == 2, dom[-3000:]
