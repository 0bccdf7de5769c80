"""Which partition a key lands in: Kafka's default partitioner, as every client computes it.

Kept apart from ``streams.topics`` so that tools (``cityagent bench``) can use it without
importing Faust.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2

__all__ = ("partition_of_key",)


def partition_of_key(key: str | bytes, partitions: int) -> int:
    """The partition the default partitioner (murmur2, in aiokafka, kafka-python and Faust)
    gives ``key``: where a bucket's readings, and its checkpoints, go."""
    data = key.encode() if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % partitions
