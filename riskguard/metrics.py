"""Prometheus metrics, named ``riskguard_<noun>_<unit>`` in base units.

Counters end in ``_total``; latencies are histograms in seconds with buckets from
100 µs. No label carries a per-order value: labels are event types, bad-event
reasons, rule names, sink names, partitions and standing (non-ACTIVE) scopes,
all bounded sets. Each runtime owns a registry so tests and several engines in
one process never collide.
"""

from __future__ import annotations

import contextlib
import platform
from typing import Final

import numba
import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from riskguard import __version__
from riskguard.vocabulary import EVENT_TYPES, STATE_CODE, Transition

LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: A cancel is confirmed in milliseconds when the trading system obeys; minutes when not.
CONFIRM_BUCKETS: Final = (*LATENCY_BUCKETS, 30.0, 60.0, 300.0)

#: Clock skew is only reported beyond ``engine.max_clock_skew_ms`` (5 s by default,
#: settable down to 0); real faults range from a second (NTP step) to hours (a wrong
#: time zone) or a day (a wrong date).
SKEW_BUCKETS: Final = (
    0.01,
    0.1,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    24 * 3600.0,
)


class Metrics:
    """Every metric the sidecar exports, on its own registry."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "riskguard_events_total", "Events applied, by type.", ["type"], registry=r
        )
        self.bad_events = Counter(
            "riskguard_bad_events_total",
            "Events rejected and sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.duplicate_events = Counter(
            "riskguard_duplicate_events_total",
            "Redelivered events recognised and not applied again (docs/events.md, Redelivery).",
            registry=r,
        )
        self.skewed_events = Counter(
            "riskguard_skewed_events_total",
            "Events stamped more than engine.max_clock_skew_ms ahead of the wall clock, "
            "applied at the wall clock.",
            registry=r,
        )
        self.late_events = Counter(
            "riskguard_late_events_total",
            "Events more than engine.max_lateness_ms behind the engine's clock, counted in "
            "rate windows as now.",
            registry=r,
        )
        # A histogram, not a gauge of the last or largest skew: nothing is lost between
        # scrapes, instances aggregate, the buckets show how far ahead clocks run, and a
        # gauge would keep showing an old skew long after the clock was fixed. One
        # observation per batch and key (the key's furthest-ahead event), not per event:
        # a producer whose clock stays fast makes every one of its events skewed, and the
        # hot path then pays per key, not per event (riskguard_skewed_events_total counts
        # events). Which key: /v1/status and the clock-skew alert (keys are accounts and
        # sources, unbounded, so not a label).
        self.clock_skew = Histogram(
            "riskguard_clock_skew_seconds",
            "Per applied batch and key (heartbeat source, account or symbol), how far ahead "
            "of the wall clock its furthest-ahead skewed event was stamped.",
            buckets=SKEW_BUCKETS,
            registry=r,
        )
        self.decision_latency = Histogram(
            "riskguard_decision_latency_seconds",
            "From the triggering event's time to the transition acknowledged on the control topic.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "riskguard_batch_apply_seconds",
            "Time to decode and apply one fetched batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "riskguard_consumer_lag_messages",
            "High watermark minus next offset to apply.",
            ["topic", "partition"],
            registry=r,
        )
        self.owned_partitions = Gauge(
            "riskguard_owned_partitions",
            "Input partitions this instance owns (group mode; all of them otherwise).",
            registry=r,
        )
        self.group_rebuilds = Counter(
            "riskguard_group_rebuilds_total",
            "Group mode: partitions gained that were read from their start (no usable checkpoint).",
            registry=r,
        )
        self.group_restores = Counter(
            "riskguard_group_snapshot_restores_total",
            "Group mode: partitions gained that were restored from their checkpoint "
            "(scale.checkpoint_dir) and read on from its offset.",
            registry=r,
        )
        self.unmarked_symbols = Gauge(
            "riskguard_unmarked_symbols",
            "Group mode: symbols held or worked here that no mark has reached (valued at "
            "their last fill price): reference data not published to every partition.",
            registry=r,
        )
        self.restore_seconds = Gauge(
            "riskguard_restore_seconds",
            "Group mode: seconds from the latest assignment until its partitions were read "
            "to their end (state restored).",
            registry=r,
        )
        self.restoring = Gauge(
            "riskguard_restoring",
            "Group mode: 1 while the latest assignment's partitions are being read back "
            "(from a snapshot's offsets or their start): their accounts' rules act late by "
            "what is left to read; 0 once every owned partition is read to its end.",
            registry=r,
        )
        self.aggregate_published = Counter(
            "riskguard_aggregate_records_published_total",
            "Group mode: records of this instance's parts of the cross-partition rules sent "
            "to the aggregation topic.",
            registry=r,
        )
        self.aggregate_bad = Counter(
            "riskguard_aggregate_records_bad_total",
            "Group mode: aggregation-topic records that could not be read (skipped).",
            registry=r,
        )
        self.aggregate_judging = Gauge(
            "riskguard_aggregate_judging",
            "Group mode: 1 on the member that judges the cross-partition sums (the owner of "
            "the first input partition), 0 on the others.",
            registry=r,
        )
        self.aggregate_complete = Gauge(
            "riskguard_aggregate_complete",
            "Group mode, on the judging member: 1 while the latest aggregation records count "
            "every input partition once under the limits in force (cross-partition rules "
            "are judged) or while there is nothing to sum, 0 otherwise (a rebalance, limits "
            "that differ between members).",
            registry=r,
        )
        self.aggregate_age = Gauge(
            "riskguard_aggregate_age_seconds",
            "Group mode: wall time minus the oldest event time the summed records reflect.",
            registry=r,
        )
        self.producer_renewals = Counter(
            "riskguard_producer_renewals_total",
            "Times a Kafka producer was built again after a send error that ends aiokafka's "
            "sender for good (OutOfOrderSequenceNumber, ProducerFenced).",
            registry=r,
        )
        self.control_rewinds = Counter(
            "riskguard_control_topic_rewinds_total",
            "Times the control topic's offsets went back under the heartbeats: it was "
            "re-created (a broker back without its data); standing states and the gates' "
            "data are published again each time.",
            registry=r,
        )
        self.topic_problems = Gauge(
            "riskguard_topic_problems",
            "Topics whose shape riskguard needs and did not find at the latest check "
            "(control topic not compacted, input partitions lost); see topic-shape alerts.",
            registry=r,
        )
        self.topic_repairs = Counter(
            "riskguard_topic_repairs_total",
            "Topic settings riskguard set back (compaction of its control and aggregation topics).",
            registry=r,
        )
        self.event_lag = Gauge(
            "riskguard_event_lag_seconds",
            "Wall time minus the event time of the latest applied event.",
            registry=r,
        )
        self.transitions = Counter(
            "riskguard_transitions_total",
            "Kill-switch transitions and alerts, by rule and action.",
            ["rule", "action"],
            registry=r,
        )
        self.scope_state = Gauge(
            "riskguard_scope_state",
            "State of each non-ACTIVE scope: 1 REDUCE_ONLY, 2 HALTED.",
            ["scope"],
            registry=r,
        )
        self.notifier_failures = Counter(
            "riskguard_notifier_failures_total",
            "Failed delivery attempts, by sink.",
            ["sink"],
            registry=r,
        )
        self.notifier_deliveries = Counter(
            "riskguard_notifier_deliveries_total",
            "Notifications delivered, by sink.",
            ["sink"],
            registry=r,
        )
        self.notifier_queue = Gauge(
            "riskguard_notifier_queue_depth",
            "Notifications waiting, by sink.",
            ["sink"],
            registry=r,
        )
        self.control_failures = Counter(
            "riskguard_control_publish_failures_total",
            "Failed publishes to the control topic.",
            registry=r,
        )
        self.cancel_requests = Counter(
            "riskguard_cancel_requests_total",
            "Cancel requests published on the control topic, by kind (halt, reduce_only).",
            ["kind"],
            registry=r,
        )
        self.cancel_orders = Counter(
            "riskguard_cancel_orders_requested_total",
            "Working orders named in cancel requests.",
            registry=r,
        )
        self.cancel_incomplete = Gauge(
            "riskguard_cancel_incomplete_orders",
            "Orders named for cancel (or opened in a halted scope after its halt) still "
            "working past the limits' cancel_deadline_ms.",
            registry=r,
        )
        self.cancel_confirmation = Histogram(
            "riskguard_cancel_confirmation_seconds",
            "From a halt's decision to the last order its cancel request named closing.",
            buckets=CONFIRM_BUCKETS,
            registry=r,
        )
        self.gate_records = Counter(
            "riskguard_gate_records_total",
            "Records published for the gates' pre-trade checks, by kind (rules, mark, instrument, "
            "position, home).",
            ["kind"],
            registry=r,
        )
        self.heartbeats = Counter(
            "riskguard_heartbeats_total", "Heartbeats published on the control topic.", registry=r
        )
        self.ready = Gauge(
            "riskguard_ready", "1 when riskguard is ready (see /readyz).", registry=r
        )
        self.users_reloads = Counter(
            "riskguard_users_reloads_total",
            "Users file reloads, by result (applied, rejected).",
            ["result"],
            registry=r,
        )
        self.limits_reloads = Counter(
            "riskguard_limits_reloads_total",
            "Limits file reloads, by result (applied, rejected).",
            ["result"],
            registry=r,
        )
        self.last_snapshot = Gauge(
            "riskguard_last_snapshot_timestamp_seconds",
            "When the last engine snapshot was written.",
            registry=r,
        )
        self.snapshot_failures = Counter(
            "riskguard_snapshot_failures_total",
            "Periodic or stop snapshots that were not written (a failed write, a writer "
            "killed at its deadline); a writer ended by a stop signal is not counted.",
            registry=r,
        )
        self.snapshot_pause = Gauge(
            "riskguard_snapshot_pause_seconds",
            "The latest snapshot's copy of the state, taken between two batches: no event "
            "is applied and no heartbeat sent meanwhile.",
            registry=r,
        )
        self.snapshot_write = Gauge(
            "riskguard_snapshot_write_seconds",
            "Serialising and writing the latest snapshot (a thread, beside the loop).",
            registry=r,
        )
        self.snapshot_size = Gauge(
            "riskguard_snapshot_size_bytes", "Size of the latest snapshot file.", registry=r
        )
        self.remembered = Gauge(
            "riskguard_redelivery_memory_ids",
            "Closed orders (kind=order) and executions (kind=execution) remembered so that "
            "a redelivery changes nothing; at most engine.dedupe_max_ids each.",
            ["kind"],
            registry=r,
        )
        self.broker_reachable = Gauge(
            "riskguard_broker_reachable",
            "1 while publishes to the broker succeed within the budget.",
            registry=r,
        )
        self.last_event = Gauge(
            "riskguard_last_event_timestamp_seconds",
            "Event time of the latest applied event.",
            registry=r,
        )
        self.limits_rules = Gauge(
            "riskguard_limits_rules", "Rules in the limits in force.", registry=r
        )
        self.peer_transitions = Counter(
            "riskguard_peer_transitions_total",
            "State records of other riskguard instances read from the control topic, by "
            "what this instance did (adopted, same, kept: ours re-published, unknown).",
            ["result"],
            registry=r,
        )
        self.peers_live = Gauge(
            "riskguard_peers_live",
            "Other riskguard instances whose latest heartbeat is fresh and ready.",
            registry=r,
        )
        self.build = Gauge(
            "riskguard_build_info",
            "Build information (value is 1).",
            ["version", "python", "numba"],
            registry=r,
        )
        self.build.labels(__version__, platform.python_version(), numba.__version__).set(1)
        for t in EVENT_TYPES:
            self.events.labels(t)

    def count_events(self, type_counts: np.ndarray) -> None:
        """Add one batch's per-type counts (kernel type codes, in EVENT_TYPES order)."""
        for code, n in enumerate(type_counts.tolist()):
            if n:
                self.events.labels(EVENT_TYPES[code]).inc(n)

    def transition(self, tr: Transition) -> None:
        """Count a transition and track the standing state of its scope."""
        if tr.kind == "resolve":
            action = "resolve"
        elif tr.is_alert:
            action = "alert"
        elif tr.to == "ACTIVE":
            action = "resume"
        else:
            action = tr.to.lower()
        self.transitions.labels(tr.rule or "manual", action).inc()
        self.standing(tr)

    def standing(self, tr: Transition) -> None:
        """Track the standing state of ``tr``'s scope (a state change: alerts do nothing),
        without counting it: for one another instance decided and this one adopted."""
        if tr.is_alert:
            return
        if tr.to == "ACTIVE":
            with contextlib.suppress(KeyError):
                self.scope_state.remove(tr.scope)
        else:
            self.scope_state.labels(tr.scope).set(STATE_CODE[tr.to])

    def exposition(self) -> bytes:
        """The text exposition format for ``/metrics``."""
        return bytes(generate_latest(self.registry))
