"""Build the worker's app from Settings: the only place that wires streams/ together."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import faust

from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig
from cityagent.detectors.registry_profiles import SensorProfiles
from cityagent.incidents import AlertingConfig, IncidentEngine
from cityagent.pipeline import Detector
from cityagent.regions import default_regions
from cityagent.routing import Router
from cityagent.settings import Settings
from cityagent.zones import ZoneSet, demo_zones
from control.kernels import say_config_notes, warm_kernels
from streams.agents import register_agents
from streams.alerting import register_alerting
from streams.app import create_app
from streams.feeds import WorkerFeeds
from streams.maintenance_feed import MaintenanceFeed
from streams.metrics import WorkerCounters
from streams.routing_feed import RoutingFeed
from streams.topics import Topics, declare_topics
from streams.zone_feed import ZoneFeed

__all__ = ("Worker", "build_worker")

log = logging.getLogger("cityagent.streams")


@dataclass(frozen=True)
class Worker:
    app: faust.App
    topics: Topics
    state: faust.Table
    incidents: faust.Table
    counters: WorkerCounters
    detector: Detector


def build_worker(settings: Settings, say: Callable[[str], None] = log.info) -> Worker:
    """The Faust app with its topics, agents and state table; raises ConfigError on bad config.

    ``say`` gets the lines an operator should see at start: the detection file's values the
    environment capped, and the kernels' compile on a machine's first run (~60 s). Faust sets
    up logging only once the app starts, so ``python -m streams`` prints them: logged, as
    before 2026-11-25, the compile's line was never seen."""
    config = DetectionConfig.load(settings.detection_path, window_s=settings.window_s,
                                  grace_s=settings.grace_s, forget_after_s=settings.forget_after_s)
    say_config_notes(config, say)
    profiles = (SensorProfiles.load(settings.registry_path, config) if settings.registry_path
                else SensorProfiles())
    regions = default_regions()
    detector = Detector(DetectionEngine(config, profiles), regions, settings.future_tolerance_ms)
    warm_kernels(detector.engine.warm_up, say)
    router = Router.load()
    zoneset = (ZoneSet.load(settings.zones_path, regions, departments=router.department_codes)
               if settings.zones_path else demo_zones(regions))
    engine = IncidentEngine(AlertingConfig.load(settings.alerting_path), router, regions)
    app = create_app(settings)
    topics = declare_topics(app, settings)
    counters = WorkerCounters()
    state = register_agents(app, topics, detector, counters, settings.checkpoint_s)
    zones = ZoneFeed(settings.bootstrap, settings.zones_topic, zoneset, regions)
    maintenance = MaintenanceFeed(settings.bootstrap, settings.maintenance_topic)
    routing = RoutingFeed(settings.bootstrap, settings.routing_topic, router)
    feeds = WorkerFeeds(zones, maintenance, routing, counters)
    incidents = register_alerting(app, topics, engine, feeds, counters, settings.checkpoint_s,
                                  settings.feeds_catch_up_s)
    return Worker(app, topics, state, incidents, counters, detector)
