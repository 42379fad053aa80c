"""``outbox-app soak``: its options and its one result line."""

from __future__ import annotations

import pytest

from outbox_app.devtools.soak import FAULT_KINDS, SoakResult, parse_faults
from outbox_app.ops.cli import main


def test_faults_are_chosen_by_name_among_those_of_the_broker() -> None:
    kafka = parse_faults("all")  # the default broker: a Kafka cluster
    assert kafka == tuple(k for k in FAULT_KINDS if k != "broker")
    assert "broker-kill" in kafka and "broker-bounce" in kafka
    tansu = parse_faults("all", "tansu")
    assert "broker" in tansu and "broker-kill" not in tansu
    assert parse_faults("none") == ()
    assert parse_faults(" kill, stop,kill ") == ("kill", "stop")
    with pytest.raises(ValueError, match="unknown fault.*bogus.*choose from kill"):
        parse_faults("kill,bogus")
    with pytest.raises(ValueError, match="broker-kill do not apply to --broker tansu"):
        parse_faults("broker-kill", "tansu")


def test_bad_options_are_refused_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["soak", "--faults", "bogus"]) == 2
    assert main(["soak", "--workers", "1"]) == 2
    assert "--workers >= 2" in capsys.readouterr().err


def test_the_result_line() -> None:
    result = SoakResult(
        events=171019,
        rolled_back=8987,
        consumed=167650,
        dead=3369,
        faults={"kill": 8, "stop": 8, "handler": 14117},
        seconds=600.2,
    )
    assert result.line() == (
        "SOAK events=171019 rolled_back=8987 consumed=167650 dead=3369 lost=0 doubled=0 "
        "out_of_order=0 "
        "faults=kill:8,stop:8,handler:14117 seconds=600"
    )
    assert result.ok
    result.doubled = 1
    assert not result.ok
    result.doubled, result.out_of_order = 0, 1
    assert not result.ok
