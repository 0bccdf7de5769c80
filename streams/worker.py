"""Build the worker's app from Settings: the only place that wires streams/ together."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig, SensorProfiles
from cityagent.pipeline import Detector
from cityagent.regions import default_regions
from cityagent.settings import Settings
from streams.agents import register_agents
from streams.app import create_app
from streams.metrics import WorkerCounters
from streams.topics import Topics, declare_topics

__all__ = ("Worker", "build_worker")


@dataclass(frozen=True)
class Worker:
    app: faust.App
    topics: Topics
    state: faust.Table
    counters: WorkerCounters


def build_worker(settings: Settings) -> Worker:
    """The Faust app with its topics, agents and state table; raises ConfigError on bad config."""
    config = DetectionConfig.load(settings.detection_path, window_s=settings.window_s,
                                  grace_s=settings.grace_s)
    profiles = (SensorProfiles.load(settings.registry_path) if settings.registry_path
                else SensorProfiles())
    detector = Detector(DetectionEngine(config, profiles), default_regions())
    app = create_app(settings)
    topics = declare_topics(app, settings)
    counters = WorkerCounters()
    state = register_agents(app, topics, detector, counters, settings.checkpoint_s)
    return Worker(app, topics, state, counters)
