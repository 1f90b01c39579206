"""The MLflow UI, as `make ui` serves it, in a real headless Chromium: the runs table (with the
rmsprop params, epochs, test accuracy and dataset columns, not MLflow's GenAI overview) and the
run-comparison page show the runs of the test's store. Screenshots of both pages are kept; the
test prints where. The same `ui` prints its links only once the server answers, hides MLflow's
advice to bind 0.0.0.0, makes a second `ui` on its port fail in one line, and at SIGTERM stops
every process it started."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil
import pytest
from fixtures.local_server import free_port, session_processes, wait_until_gone

from conftest import REPO_ROOT
from mnist_pipeline.analysis import views

pytestmark = pytest.mark.slow

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The MLflow UI fetches its data after the page loads; Chromium's virtual clock lets it finish.
TIME_BUDGETS_MS = (15_000, 40_000)


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Chromium, installed from Debian's `chromium` package when missing (CI starts bare)."""
    if found := find_chromium():
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("Chromium is not installed and there is no apt-get to install it")
    if os.geteuid() != 0:
        pytest.skip("Chromium is not installed; install it with `sudo apt-get install chromium`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"could not install Chromium (`{' '.join(command)}`: {last})")
    return find_chromium() or pytest.skip("apt-get installed chromium but it is not on PATH")


def browse(chromium: str, url: str, *, screenshot=None, height: int = 1100) -> str:
    """The page's DOM once its scripts have run (or, with `screenshot`, a PNG of it)."""
    for budget in TIME_BUDGETS_MS:
        with tempfile.TemporaryDirectory() as profile:
            output = ["--screenshot=" + str(screenshot)] if screenshot else ["--dump-dom"]
            command = [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size=2600,{height}",  # wide enough for every compared column
                f"--virtual-time-budget={budget}",
                *output,
                url,
            ]
            done = subprocess.run(command, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        if screenshot or "Run Name" in done.stdout or "Comparing" in done.stdout:
            return done.stdout
    return done.stdout


@pytest.fixture
def ui(tiny_store_copy, tmp_path):
    """`mnist-pipeline ui` on a free port, serving the tiny store, once it printed its runs link;
    yields the link, the store, the command and the session of the server it started."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "mnist_pipeline", "--params", str(REPO_ROOT / "params.yaml")),
        *("ui", "--port", str(port)),
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tiny_store_copy.uri}
    with open(tmp_path / "ui.log", "w+") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            lines = [process.stdout.readline() for _ in range(3)]  # or "" once it failed
            assert process.poll() is None, (tmp_path / "ui.log").read_text()
            (server,) = psutil.Process(process.pid).children()
            yield lines, tiny_store_copy, process, server.pid, log
        finally:
            if process.poll() is None:
                process.terminate()  # which `ui` passes on to all it started
                process.wait(timeout=60)


def test_runs_table_and_comparison_page_show_the_runs(chromium, ui, tmp_path_factory):
    lines, store, command, session, log = ui
    link = re.search(r"^runs: (\S+)$", "".join(lines), re.MULTILINE)[1]
    base_url = link.split("/#/")[0]
    with urllib.request.urlopen(f"{base_url}/health", timeout=60) as answer:  # busy, not down
        assert answer.status == 200  # already answering when the link was printed
    assert link == views.runs_page_link(base_url, store.experiment_id)
    assert base_url.startswith("http://127.0.0.1:")  # loopback only

    table = browse(chromium, link)
    for name in store.run_ids:
        assert name in table
    for column in ("train.optimizer.learning_rate", "train.optimizer.rho", "train.epochs"):
        assert column in table
    assert "test_accuracy" in table and "0.95" in table and "0.0005" in table
    assert "mnist-train" in table  # the Dataset column: the data each run used
    assert "Detect Issues" not in table  # not MLflow's GenAI overview

    compare_link = views.compare_page_link(
        base_url, store.experiment_id, list(store.run_ids.values())
    )
    comparison = browse(chromium, compare_link)
    assert f"Comparing {len(store.run_ids)} Runs" in comparison
    for text in ("train.optimizer.learning_rate", "train.optimizer.rho", "test_accuracy", "0.95"):
        assert text in comparison
    for name in store.run_ids:
        assert name in comparison

    screenshots = tmp_path_factory.mktemp("ui-screenshots")
    for page, url, height in (("runs-table", link, 700), ("run-comparison", compare_link, 2400)):
        browse(chromium, url, screenshot=screenshots / f"{page}.png", height=height)
        assert (screenshots / f"{page}.png").stat().st_size > 20_000
    print(f"\nMLflow UI screenshots: {screenshots}")

    port = base_url.rsplit(":", 1)[1]
    second = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline", "--params", str(REPO_ROOT / "params.yaml"),
         "ui", "--port", port],
        env={**os.environ, "MLFLOW_TRACKING_URI": store.uri}, capture_output=True, text=True,
        timeout=120,
    )
    assert (second.returncode, second.stdout) == (2, "")
    assert second.stderr.splitlines()[-1].startswith(f"error: port {port} is already in use;")
    assert "--port" in second.stderr and "Errno" not in second.stderr

    assert len(session_processes(session)) > 3  # mlflow server, uvicorn and its workers, jobs
    command.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert command.wait(timeout=60) == 0
    assert wait_until_gone(session) == [], f"left running {time.monotonic() - started:.0f} s"
    log.seek(0)
    assert "0.0.0.0" not in log.read()  # MLflow's advice, which the README contradicts
