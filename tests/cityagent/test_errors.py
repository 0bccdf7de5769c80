"""``describe_exception``: one line naming a library's exception, its name once."""

from __future__ import annotations

from aiokafka.errors import KafkaConnectionError
from kafka.errors import KafkaTimeoutError

from cityagent.errors import describe_exception


def test_a_kafka_error_is_named_once() -> None:
    # kafka-python's and aiokafka's errors start their own text with their class name:
    # "KafkaTimeoutError: KafkaTimeoutError: ..." was what the simulator printed.
    timeout = KafkaTimeoutError("Failed to update metadata after 30.0 secs.")
    assert str(timeout).startswith("KafkaTimeoutError: ")
    assert describe_exception(timeout) == "KafkaTimeoutError: Failed to update metadata after 30.0 secs."
    assert describe_exception(KafkaTimeoutError()) == "KafkaTimeoutError"
    refused = KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")
    assert describe_exception(refused).count("KafkaConnectionError") == 1


def test_other_exceptions_are_named_before_their_text() -> None:
    assert describe_exception(OSError(28, "No space left on device")) == (
        "OSError: [Errno 28] No space left on device")
    assert describe_exception(ValueError()) == "ValueError"
    # A text that merely begins with the name's letters still gets the name.
    assert describe_exception(ValueError("ValueErrors galore")) == "ValueError: ValueErrors galore"
