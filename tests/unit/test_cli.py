"""The CLI: help reads well, errors are one clear line with exit code 2, `plan` prints a plan."""
from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import build_parser, main
from tests.helpers.builders import tiny_package


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("pretrain", "train", "plan", "serve", "planner", "stream", "demo"):
        assert name in sub.choices and sub.choices[name].description
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    assert "--budget" in capsys.readouterr().out


def test_plan_prints_each_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_package(tmp_path, apps=("car", "person"))
    assert main(["plan", "--package", str(tmp_path), "--apps", "car", "person", "car", "--budget", "0.01", "--batch", "4",
                 "--policy", "all"]) == 0
    out = capsys.readouterr().out
    for policy in ("mainstream", "max_sharing", "no_sharing", "exhaustive"):
        assert f"plan by {policy}" in out
    assert "car#2" in out


def test_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    assert "config file not found" in capsys.readouterr().err
    tiny_package(tmp_path)
    assert main(["plan", "--package", str(tmp_path), "--apps", "bus", "--budget", "1"]) == 2
    assert "not in the package" in capsys.readouterr().err


def test_stream_without_a_token_is_a_clear_error(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEMCELL_CAMERA_TOKEN", raising=False)
    assert main(["stream", "--source", "synthetic:0", "--camera", "cam-1"]) == 2
    assert "STEMCELL_CAMERA_TOKEN" in capsys.readouterr().err


def test_policy_flags_offer_every_registered_policy() -> None:
    """The CLI's choices come from the registries: a newly registered policy is selectable at once."""
    from stemcell.scheduling.registry import SCHEDULERS
    from stemcell.scheduling.slicing import SLICING_POLICIES

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    choices = {(name, a.dest): a.choices for name in ("plan", "planner")
               for a in sub.choices[name]._actions if a.dest in ("policy", "scheduler", "slicing")}
    assert choices == {("plan", "policy"): [*SCHEDULERS, "all"], ("planner", "scheduler"): list(SCHEDULERS),
                       ("planner", "slicing"): list(SLICING_POLICIES)}
