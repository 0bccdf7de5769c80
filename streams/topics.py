"""The pipeline's topics as the Faust app sees them. Names come from Settings.

    <prefix>.readings   key: sensor bucket (b000-b255)   value: columnar reading batch (raw bytes)
    <prefix>.anomalies  key: district code                value: Anomaly as JSON
    <prefix>.alerts     key: district code                value: Alert snapshot as JSON
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from cityagent.settings import Settings

__all__ = ("Topics", "declare_topics")


@dataclass(frozen=True)
class Topics:
    readings: faust.TopicT
    anomalies: faust.TopicT
    alerts: faust.TopicT


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
        anomalies=topic(settings.anomalies_topic, "json"),
        alerts=topic(settings.alerts_topic, "json"),
    )
