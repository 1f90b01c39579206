"""benchmarks/networks.py's section and table, on made-up numbers (nothing is trained)."""

from __future__ import annotations

import json

from benchmarks import networks
from mnist_pipeline.params import parse_params

MACHINE = {"cpu_count": 2, "processor": "a test CPU"}
PARAMS = {"base": {"seed": 42}, "train": {"epochs": 5, "batch_size": 128}}


def measured(label="512, Adam lr 0.001", seconds=(4.0, 1.5, 1.25), accuracy=0.97834, busy=0.3):
    return {
        "label": label,
        "train": networks.NETWORKS.get(label, {}),
        "epoch_seconds": list(seconds),
        "others_cores": busy,
        "test_accuracy": accuracy,
    }


def test_every_network_is_valid_params_and_the_chapters_is_unchanged(params_tree):
    for changes in networks.NETWORKS.values():
        parse_params(networks.network_params(params_tree, changes))  # raises if invalid
    assert networks.NETWORKS["512, RMSprop lr 0.001 (the chapter's)"] == {}
    optimizers = {c.get("optimizer", {}).get("name", "rmsprop") for c in networks.NETWORKS.values()}
    assert optimizers == {"sgd", "rmsprop", "adam"}
    assert any(
        c.get("hidden_units") == [512, 256] and c["dropout"] == 0.2
        for c in networks.NETWORKS.values()
    )


def test_network_params_change_only_the_train_section(params_tree):
    changed = networks.network_params(params_tree, {"dropout": 0.2})
    assert changed["train"]["dropout"] == 0.2 and params_tree["train"]["dropout"] == 0.0
    assert changed["prepare"] is params_tree["prepare"]


def test_section_sums_the_epochs_and_rounds():
    section = networks.networks_section([measured()], PARAMS, MACHINE)
    (network,) = section["networks"]
    assert network["fit_seconds"] == 6.75 and network["test_accuracy"] == 0.9783
    assert (section["epochs"], section["batch_size"], section["seed"]) == (5, 128, 42)
    assert section["processor"] == "a test CPU"


def test_table_lists_each_network_with_the_machine_and_how_busy_it_was():
    section = networks.networks_section(
        [measured(), measured("512, SGD lr 0.1", (3.0, 2.0), 0.9, busy=1.26)], PARAMS, MACHINE
    )
    lines = networks.networks_table(section).splitlines()
    assert lines[2] == "| 512, Adam lr 0.001 | 0.9783 | 6.8 |"
    assert lines[3] == "| 512, SGD lr 0.1 | 0.9000 | 5.0 |"
    assert "a test CPU, 2 cores" in lines[-1] and "up to 1.3 cores busy" in lines[-1]


def test_write_section_keeps_the_other_sections(tmp_path):
    path = tmp_path / "results.json"
    networks.write_section(path, {"team": {"x": 1}}, {"networks": []})
    assert json.loads(path.read_text()) == {"team": {"x": 1}, "networks": {"networks": []}}
