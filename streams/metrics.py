"""What a worker reports on `/metrics` (Prometheus text format).

One module owns every metric, so names stay consistent with the alert rules
and dashboards in `deploy/` (Prometheus naming: `sepwatch_` prefix, base
units, `_total` on counters). Labels take values from small, closed sets
(streams, rule ids, severities, entities of the policy, channels, reason
kinds): never an identifier, never free text.
"""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from schemas import Policy

# The *_created series double every counter's lines and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus-client

EVENTS = Counter(
    "sepwatch_events_total",
    "Valid canonical events taken in, by stream.",
    ["stream"],
)
DEAD_LETTERS = Counter(
    "sepwatch_dead_letters_total",
    "Records sent to the dead letters, by kind of reason "
    "(too_large, invalid_event, out_of_range, wrong_topic, too_far_ahead, unmappable, "
    "es_rejected, stage_error, "
    "notification_undeliverable).",
    ["reason"],
)
FINDINGS = Counter(
    "sepwatch_findings_total",
    "Findings raised, by rule, severity, entity (one the policy names, else other) and "
    "status (open or waived).",
    ["rule", "severity", "entity", "status"],
)
IDENTIFIERS_PSEUDONYMISED = Counter(
    "sepwatch_identifiers_pseudonymised_total",
    "Event fields in which admission found an identifier (an RRN, a card or account "
    "number, ...) and put its keyed pseudonym instead, by field (a field the contract "
    "names, object.name, or extra).",
    ["field"],
)
DECISION_LATENCY = Histogram(
    "sepwatch_decision_latency_seconds",
    "From the triggering event's time to its finding's emission (wall clock): the source's "
    "delay and the wait for the watermark included.",
    ["rule"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
EVENT_TIME_LAG = Gauge(
    "sepwatch_watermark_lag_seconds",
    "Wall clock minus the event clock of the slowest stage partition this worker holds.",
    ["stage"],
)
# How often what is measured rather than counted (the backlogs, the event
# clocks' lag) is set: one period for the validator, the stages under either
# guarantee and Faust's timers, so the series move together.
REPORT_SECONDS = 5.0
CONSUMER_LAG = Gauge(
    "sepwatch_consumer_lag_records",
    "Records on the topic not yet consumed, by consumer (rules, es_sink, alerts) and topic.",
    ["consumer", "topic"],
)
POLICY_RELOADS = Counter(
    "sepwatch_policy_reloads_total",
    "Policy file changes seen while running, by outcome (loaded, refused).",
    ["outcome"],
)
END_OF_INPUT_IGNORED = Counter(
    "sepwatch_end_of_input_ignored_total",
    "End-of-input markers not honoured, by reason (no_key: the worker has none; unsigned, "
    "bad_signature: not from a holder of the key; stale, replayed: a copy written again).",
    ["reason"],
)
LATE_EVENTS = Counter(
    "sepwatch_late_events_total",
    "Events older than their stage's watermark when judged (later than the allowed "
    "lateness), by stage.",
    ["stage"],
)
IDENTITY_CONFLICTS = Counter(
    "sepwatch_identity_conflicts_total",
    "Device aliases claimed by two canonical devices (a reused hostname, a re-imaged "
    "laptop); each went to the more recent assertion (detectors/identity.py), by stage.",
    ["stage"],
)
DECISIONS_UNKNOWABLE = Counter(
    "sepwatch_decisions_unknowable_total",
    "Decisions that could not be made because the state they needed was evicted (an access "
    "older than the oldest posture kept), by stage.",
    ["stage"],
)
SIGNINS_MFA_UNSAID = Counter(
    "sepwatch_signins_mfa_unsaid_total",
    "Sign-ins from the internal network whose source does not say whether they were "
    "multi-factor, nor do their session's factors (SEP-010): counted, never guessed, by stage.",
    ["stage"],
)
SIGNINS_MFA_FROM_SESSION = Counter(
    "sepwatch_signins_mfa_from_session_total",
    "Sign-ins that do not say whether they were multi-factor, judged multi-factor by a "
    "second factor verified earlier in the same identity provider session, by stage.",
    ["stage"],
)

# Vendor adapters (docs/adapters.md)
ADAPTER_RECORDS = Counter(
    "sepwatch_adapter_records_total",
    "Raw vendor records the adapters read, by source and outcome (event: mapped to canonical "
    "events; skipped: a vendor event type with no access, posture or DLP meaning; dead: "
    "dead-lettered).",
    ["source", "outcome"],
)
ADAPTER_SKIPPED = Counter(
    "sepwatch_adapter_skipped_total",
    "Raw vendor records skipped, by source and vendor event type (masked; the first 50 "
    "types a source shows, later ones as other).",
    ["source", "kind"],
)

# Elasticsearch sink
SINK_INDEXED = Counter(
    "sepwatch_es_sink_documents_total",
    "Findings written to Elasticsearch, by result (created, already_present).",
    ["result"],
)
DLP_RETRACTIONS = Counter(
    "sepwatch_dlp_retractions_total",
    "Vendor retractions of DLP matches (M365 DlpRuleUndo), by outcome: resolved (it "
    "resolved the findings of its match), already_settled (its findings were resolved, "
    "waived or retracted before), matched_nothing (no finding of that match within the "
    "hold: the match made none, or its finding never reached Elasticsearch).",
    ["outcome"],
)
DLP_RETRACTIONS_HELD = Gauge(
    "sepwatch_dlp_retractions_held",
    "Retractions matching no finding yet, held and tried again until their finding "
    "arrives or the hold ends.",
)
SINK_BACKLOG = Gauge(
    "sepwatch_es_sink_backlog_findings",
    "Findings read from Kafka and not yet in Elasticsearch, plus the findings topic's lag.",
)
SINK_ERRORS = Counter(
    "sepwatch_es_sink_errors_total",
    "Failed bulk attempts or documents, by kind (unavailable, throttled, rejected).",
    ["kind"],
)
SINK_UP = Gauge(
    "sepwatch_es_sink_up",
    "1 if the last bulk request reached Elasticsearch, 0 while it is retrying.",
)
SINK_LATENCY = Histogram(
    "sepwatch_es_sink_latency_seconds",
    "From a finding's append to the findings topic to its bulk write's acknowledgement.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)

# Alert router
NOTIFICATIONS_SENT = Counter(
    "sepwatch_notifications_sent_total",
    "Notifications delivered, by channel.",
    ["channel"],
)
NOTIFICATIONS_FAILED = Counter(
    "sepwatch_notifications_failed_total",
    "Delivery attempts that failed, by channel and outcome (retried, dead_lettered).",
    ["channel", "outcome"],
)
NOTIFICATIONS_SUPPRESSED = Counter(
    "sepwatch_notifications_suppressed_total",
    "Findings folded into an open notification group instead of notifying, or waived.",
    ["reason"],
)


OTHER_ENTITY = "other"


def policy_entities(policy: Policy) -> frozenset[str]:
    """The entities a policy names: in its review baselines, waivers and alert routes."""
    named = set(policy.review.entity_baselines)
    named.update(w.entity for w in policy.waivers if w.entity)
    for route in policy.alerting.routes:
        value = route.match.get("entity")
        named.update([value] if isinstance(value, str) else value or ())
    return frozenset(str(e) for e in named)


def entity_label(entity: str, named: Collection[str]) -> str:
    """The `entity` label of a finding: an entity the policy names, else
    `other`. An event's entity is text from its source: taken as a label it
    would make a series of anything (an identifier too) and grow without end."""
    return entity if entity in named else OTHER_ENTITY


def exposition(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The body and content type of a `/metrics` answer."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
