"""`make bench` (`--only networks`): the network options on the full data - the chapter's network
with each optimizer (SGD at two learning rates, with and without momentum; RMSprop, the
chapter's; Adam) and a two-hidden-layer network with dropout - each trained by the real train
stage with params.yaml's other settings, then scored on the test set. Figures: test accuracy
and fit time (all epochs, the first one's compiling included)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.processes import REPO_ROOT, child_env, run_process, wait_for_quiet, write_yaml
from benchmarks.training import parse_epoch_seconds, score, train_stage_command

SGD = {"name": "sgd", "momentum": 0.0, "nesterov": False}
ADAM = {"name": "adam", "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1.0e-7, "amsgrad": False}
# Label -> the train params it changes; everything else is params.yaml's (the chapter's).
NETWORKS: dict[str, dict] = {
    "512, SGD lr 0.01": {"optimizer": {**SGD, "learning_rate": 0.01}},
    "512, SGD lr 0.01, momentum 0.9": {
        "optimizer": {**SGD, "learning_rate": 0.01, "momentum": 0.9}
    },
    "512, SGD lr 0.1": {"optimizer": {**SGD, "learning_rate": 0.1}},
    "512, SGD lr 0.1, momentum 0.9": {"optimizer": {**SGD, "learning_rate": 0.1, "momentum": 0.9}},
    "512, RMSprop lr 0.001 (the chapter's)": {},
    "512, Adam lr 0.001": {"optimizer": {**ADAM, "learning_rate": 0.001}},
    "512-256, dropout 0.2, RMSprop lr 0.001": {"hidden_units": [512, 256], "dropout": 0.2},
}


def network_params(params: dict, changes: dict) -> dict:
    """params.yaml's tree with the train section changed as one NETWORKS entry says."""
    return {**params, "train": {**params["train"], **changes}}


def measure_networks(params: dict, work: Path, store_uri: str, max_wait: float) -> list[dict]:
    """Trains each of NETWORKS with the real train stage, one process each, and scores it."""
    measured = []
    for index, (label, changes) in enumerate(NETWORKS.items()):
        busy = wait_for_quiet(max_wait)
        print(f"network {label} (others use {busy:.1f} cores) ...", flush=True)
        out = work / f"network-{index}"
        out.mkdir()
        params_file = out / "params.yaml"
        write_yaml(params_file, network_params(params, changes))
        process = run_process(
            train_stage_command(params_file, out),
            REPO_ROOT,
            child_env(MLFLOW_TRACKING_URI=store_uri),
            work / f"network-{index}.log",
        )
        measured.append(
            {
                "label": label,
                "train": changes,
                "epoch_seconds": parse_epoch_seconds(process.output),
                "others_cores": round(process.others_cores, 2),
                "model": out / "model.keras",
            }
        )
    # Scored after all runs, so this process stays light while the children are timed.
    return [
        {**{k: v for k, v in m.items() if k != "model"}, "test_accuracy": score(m["model"])}
        for m in measured
    ]


def networks_section(measured: list[dict], params: dict, machine: dict) -> dict:
    """results.json's `networks` section: each network's accuracy and fit time, the settings
    they share and the machine."""
    return {
        **machine,
        "epochs": params["train"]["epochs"],
        "batch_size": params["train"]["batch_size"],
        "seed": params["base"]["seed"],
        "networks": [
            {
                "label": m["label"],
                "train": m["train"],
                "test_accuracy": round(m["test_accuracy"], 4),
                "fit_seconds": round(sum(m["epoch_seconds"]), 2),
                "epoch_seconds": [round(s, 3) for s in m["epoch_seconds"]],
                "others_cores": m["others_cores"],
            }
            for m in measured
        ],
    }


def networks_table(section: dict) -> str:
    """The section as a Markdown table (the README quotes it), with the machine below."""
    lines = [
        "| network and optimizer | test accuracy | fit time (s) |",
        "|---|---:|---:|",
    ]
    for network in section["networks"]:
        lines.append(
            f"| {network['label']} | {network['test_accuracy']:.4f} | "
            f"{network['fit_seconds']:.1f} |"
        )
    busiest = max((n["others_cores"] for n in section["networks"]), default=0.0)
    lines.append("")
    lines.append(
        f"{section['epochs']} epochs, batch {section['batch_size']}, seed {section['seed']}; "
        f"{section['processor']}, {section['cpu_count']} cores; other processes kept up to "
        f"{busiest:.1f} cores busy, so fit times are indicative."
    )
    return "\n".join(lines)


def write_section(path: Path, previous: dict, section: dict) -> None:
    """Replaces only the `networks` section of results.json."""
    path.write_text(json.dumps({**previous, "networks": section}, indent=2) + "\n", "utf-8")
