"""The simulator's command line without a broker: argument checks and an unreachable broker."""

from __future__ import annotations

import pytest

from sensors_sim.cli import main
from tests.helpers import free_port


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--sensors", "0"], "--sensors: must be positive"),
        (["--sensors", "ten"], "--sensors: must be a whole number"),
        (["--rate", "-5"], "--rate: must be positive"),
        (["--duration", "0"], "--duration: must be positive"),
        (["--count", "0"], "--count: must be positive"),
        (["--breach-every", "-1"], "--breach-every: must be 0 or more"),
        (["--breach-duration", "nan"], "--breach-duration: must be positive"),
        (["--duration", "1", "--count", "5"], "not allowed with argument"),
    ],
)
def test_bad_arguments(argv, says, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert says in capsys.readouterr().err


def test_unreachable_broker_is_one_clear_message(capsys):
    bootstrap = f"127.0.0.1:{free_port()}"
    code = main(["--sensors", "10", "--duration", "1", "--bootstrap", bootstrap,
                 "--topic", "t.readings", "--connect-timeout", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot reach the Kafka brokers at {bootstrap}" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
