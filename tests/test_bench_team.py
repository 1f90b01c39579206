"""benchmarks/team.py's figures and checks, on made-up numbers (no stack, no server)."""

from __future__ import annotations

from benchmarks import team

MACHINE = {"cpu_count": 2, "processor": "a test CPU"}


def section(server=1.2, sqlite=0.4, runs=(2.0, 2.5, 9.0), promote=(3.5, 2.9, 2.8)):
    return team.team_section(
        server, sqlite, {"runs --limit 20": list(runs), "promote": list(promote)}, 5000, MACHINE
    )


def test_all_goals_met_pass():
    checks = section()["checks"]
    assert checks == {
        team.LOGGING_CHECK: True,
        team.cli_check("runs --limit 20"): True,
        team.cli_check("promote"): True,
    }


def test_the_median_of_the_repeats_is_judged_not_the_slowest_or_first():
    result = section(runs=(9.0, 2.9, 2.0), promote=(3.1, 3.2, 2.0))
    assert result["cli_seconds_median"] == {"runs --limit 20": 2.9, "promote": 3.1}
    assert result["checks"][team.cli_check("runs --limit 20")] is True
    assert result["checks"][team.cli_check("promote")] is False


def test_goals_are_inclusive_and_a_slow_server_fails():
    assert section(server=1.5)["checks"][team.LOGGING_CHECK] is True
    assert section(server=1.501)["checks"][team.LOGGING_CHECK] is False
    assert section(runs=(3.0, 3.0, 3.0))["checks"][team.cli_check("runs --limit 20")] is True


def test_section_keeps_the_figures_the_machine_and_the_targets():
    result = section(server=7.1234, sqlite=0.3567)
    assert result["server_logging_seconds"] == 7.123
    assert result["sqlite_logging_seconds"] == 0.357
    assert result["runs_in_experiment"] == 5000
    assert result["cli_seconds"]["promote"] == [3.5, 2.9, 2.8]
    assert result["processor"] == "a test CPU"
    assert result["targets"] == team.TARGETS


def test_sqlite_figure_may_be_missing():
    result = section(sqlite=None)
    assert result["sqlite_logging_seconds"] is None
    assert "-" in team.team_table(result)


def test_table_shows_the_figures_and_verdicts():
    text = team.team_table(section(server=7.12, runs=(9.7, 9.8, 9.9)))
    assert "7.120" in text and "0.400" in text
    assert "9.80 s median (9.70, 9.80, 9.90)" in text
    assert f"FAIL  {team.LOGGING_CHECK}" in text
    assert f"FAIL  {team.cli_check('runs --limit 20')}" in text
    assert f"PASS  {team.cli_check('promote')}" in text


def test_the_diagnosis_is_kept_and_shown():
    diagnosis = {
        "authenticated_request_seconds": 0.25,
        "server_requests": {"train stage": 20, "runs --limit 20": 2.0, "promote": 7.7},
        "search_every_run_seconds": 8.0,
        "search_every_run_count": 5000,
        "search_20_runs_seconds": 0.5,
        "cli_help_seconds": 2.3,
    }
    result = team.team_section(
        7.0, 0.4, {"runs --limit 20": [10.0], "promote": [4.5]}, 5000, MACHINE, diagnosis
    )
    assert result["server_requests"]["train stage"] == 20
    text = team.team_table(result)
    assert "one authenticated request: 0.250 s" in text
    assert "every run fetched (5,000, as `runs` does): 8.00 s" in text
    assert "`mnist-pipeline --help`: 2.30 s" in text


def handover_section(a_repro=30.0, clone=0.5, pull=3.0, repro=2.5):
    return team.team_section(
        1.2,
        0.4,
        {"promote": [2.0]},
        5000,
        MACHINE,
        handover={"a_repro": a_repro, "clone": clone, "pull": pull, "repro": repro},
    )


def test_the_handover_is_judged_on_b_s_three_steps_together_against_a_s_repro():
    result = handover_section()
    assert result["handover_seconds"]["b_total"] == 6.0
    assert result["handover_seconds"]["fraction_of_a"] == 0.2
    assert result["checks"][team.HANDOVER_CHECK] is True
    assert handover_section(pull=7.0)["checks"][team.HANDOVER_CHECK] is True  # exactly 1/3
    assert handover_section(pull=7.1)["checks"][team.HANDOVER_CHECK] is False
    assert "handover_seconds" not in section() and team.HANDOVER_CHECK not in section()["checks"]


def test_the_table_shows_the_handover_steps():
    text = team.team_table(handover_section(a_repro=25.04, clone=0.44, pull=3.1, repro=2.46))
    assert "A's dvc repro 25.0 s; B's clone 0.4 + pull 3.1 + repro 2.5 = 6.0 s (24% of A's)" in text
    assert f"PASS  {team.HANDOVER_CHECK}" in text
