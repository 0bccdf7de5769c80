"""What the worker's agents check in a message before the domain sees it (no broker needed):
the readings key names a bucket, and values on the JSON topics are JSON."""

from __future__ import annotations

import pytest

from cityagent.errors import InvalidBatch
from streams.agents import _bucket_of_key
from streams.topics import InvalidMessage, from_json, to_json


@pytest.mark.parametrize("key, bucket", [(b"b000", "b000"), (b"b255", "b255"), ("b017", "b017")])
def test_a_bucket_key_names_its_bucket(key: bytes | str, bucket: str) -> None:
    assert _bucket_of_key(key) == bucket


@pytest.mark.parametrize("key", [None, b"", b"b256", b"b1", b"b0000", b"x017", b'"b017"',
                                 b"\xff\xfe", "b01\n"])
def test_any_other_key_is_an_invalid_batch(key: bytes | str | None) -> None:
    with pytest.raises(InvalidBatch, match="must be its sensors' bucket, b000-b255"):
        _bucket_of_key(key)


def test_json_values_round_trip_and_anything_else_is_an_invalid_message() -> None:
    assert from_json(to_json({"anomaly": {"score": 0.5}})) == {"anomaly": {"score": 0.5}}
    with pytest.raises(InvalidMessage, match="not JSON"):
        from_json(b"\x00not json")
    with pytest.raises(InvalidMessage, match="no value"):
        from_json(None)
