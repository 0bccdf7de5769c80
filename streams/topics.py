"""The pipeline's topics as the Faust app sees them. Names come from Settings.

    <prefix>.readings   key: sensor bucket (b000-b255)   value: columnar reading batch (raw bytes)
    <prefix>.anomalies  key: district code                value: Anomaly as JSON
    <prefix>.alert-scopes   key: correlation scope        value: {"anomaly": Anomaly JSON}
                                                                 or the API's {"command": ...}
    <prefix>.alert-commands key: the alert's scope         value: {"command": Command JSON}
                                                           (written before 2026-11-24)
    <prefix>.alerts     key: correlation scope            value: AlertEvent as JSON (the audit trail)

``incident_inputs`` is one channel over alert-scopes and alert-commands: the agent that owns
a scope sees its anomalies and its operators' commands. Only within one partition is the
order fixed (two topics are read in no fixed order, also when a restarted worker applies
them again), so the API writes commands to alert-scopes (api/commands.py).

Every value is raw bytes to Faust: the agents encode and decode JSON themselves (``to_json``,
``from_json``). With Faust's JSON codec a message that is not JSON, which anything may write
to a topic, crashed the agent reading it, again at each of its restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
import orjson

from cityagent.settings import Settings

__all__ = ("Topics", "declare_topics", "table_key", "legacy_key", "part_key", "PART_SEP",
           "to_json", "from_json", "InvalidMessage")

#: Separates a bucket from a part number in the key of a checkpoint part: ``b017/2``.
PART_SEP = "/"


@dataclass(frozen=True)
class Topics:
    readings: faust.TopicT
    anomalies: faust.TopicT
    alerts: faust.TopicT
    scopes: faust.TopicT
    commands: faust.TopicT
    incident_inputs: faust.TopicT


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    def topic(name: str, value_serializer: str) -> faust.TopicT:
        return app.topic(
            name,
            key_type=str,
            key_serializer="raw",
            value_serializer=value_serializer,
            partitions=settings.partitions,
        )

    return Topics(
        readings=topic(settings.readings_topic, "raw"),
        anomalies=topic(settings.anomalies_topic, "raw"),
        alerts=topic(settings.alerts_topic, "raw"),
        scopes=topic(settings.scopes_topic, "raw"),
        commands=topic(settings.commands_topic, "raw"),
        incident_inputs=app.topic(
            settings.scopes_topic, settings.commands_topic, key_type=str, key_serializer="raw",
            value_serializer="raw", partitions=settings.partitions,
        ),
    )


def to_json(doc: Any) -> bytes:
    """A message value as JSON."""
    return orjson.dumps(doc)


def from_json(value: bytes | None) -> Any:
    """A message value's JSON document, or InvalidMessage saying why it is none."""
    if value is None:
        raise InvalidMessage("the message has no value")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"the message is not JSON: {exc}") from None


class InvalidMessage(ValueError):
    """A message on a JSON topic that is not JSON."""


def table_key(key: str) -> bytes:
    """A table key as stored: raw bytes, as on the topics (tables are declared with
    ``key_type=bytes``). Faust's default for a ``str`` key is JSON, whose quoted bytes hash
    to another partition than the topic's key: the changelog record of a bucket would then
    sit in a partition that Faust assigns, and recovers, with other buckets' readings."""
    return key.encode()


def legacy_key(key: str) -> bytes:
    """How a table key written before raw keys (JSON, with quotes) reads back: such state is
    still found, and rewritten under its raw key when it next changes."""
    return f'"{key}"'.encode()


def part_key(bucket: str, part: int) -> bytes:
    """The table key of part ``part`` of a bucket's checkpoint (``BucketState.to_parts``):
    part 0 keeps the bucket's own key (where a one-record checkpoint was), the others add
    ``/<n>``. Every part is written to, and recovered from, the bucket's partition
    (``streams.parted.PartedTable``)."""
    return table_key(bucket if part == 0 else f"{bucket}{PART_SEP}{part}")
