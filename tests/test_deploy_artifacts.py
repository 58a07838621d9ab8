"""What a SOC installs from deploy/ agrees with the code that feeds it.

Metric names and labels in the Prometheus rules and the Grafana dashboard
come from streams/metrics.py; fields in the Kibana saved objects from the
index template in streams/elastic.py; the compose file's settings from
streams/settings.py and its versions from the deploy/local scripts. The
rules, the scrape config and the Alertmanager routing are checked by the
real tools (Debian's promtool and amtool, installed by the project's set-up:
absent tools fail these tests, they do not skip them).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from detectors import CATALOGUE
from streams import metrics
from streams.elastic import MAPPINGS, SEVERITY_SCORE, STATUSES, index_for
from streams.settings import Settings
from streams.topics import INPUT_STREAMS

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "sepwatch-rules.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "sepwatch-dashboard.json"
GRAFANA_DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
KIBANA = DEPLOY / "kibana" / "sepwatch-saved-objects.ndjson"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"

# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
JOB = "sepwatch"


# -- the metrics catalogue ----------------------------------------------------


def _catalogue() -> dict[str, tuple[MetricWrapperBase, frozenset[str]]]:
    """Every series name a worker can expose -> (its metric, its labels)."""
    out: dict[str, tuple[MetricWrapperBase, frozenset[str]]] = {}
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        # prometheus_client keeps the base name (a counter's without `_total`)
        # and the label names on the wrapper; there is no public accessor.
        name, labels, kind = obj._name, frozenset(obj._labelnames), obj._type
        if kind == "counter":
            out[name + "_total"] = (obj, labels)
        elif kind == "histogram":
            out[name + "_bucket"] = (obj, labels | {"le"})
            out[name + "_sum"] = (obj, labels)
            out[name + "_count"] = (obj, labels)
        else:
            out[name] = (obj, labels)
    return out


CATALOGUE_SERIES = _catalogue()
ALL_LABELS = frozenset().union(*(labels for _, labels in CATALOGUE_SERIES.values()))

# Closed sets of label values the code knows; other labels' values must be
# named in the metric's HELP text (where metrics.py lists them).
KNOWN_VALUES: dict[str, set[str]] = {
    "stream": set(INPUT_STREAMS),
    "rule": set(CATALOGUE),
    "severity": set(SEVERITY_SCORE),
    "status": set(STATUSES),
    "job": {JOB},
}

SELECTOR = re.compile(r"\b(sepwatch_[a-z_]+)\b(?:\s*\{([^}]*)\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
TEMPLATE_LABEL = re.compile(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)")


def _balanced(text: str, start: int) -> str:
    """The parenthesised group opening at text[start] (without its parens)."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i]
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def promql_problems(expr: str) -> list[str]:
    """Unknown metric names, labels a metric does not have, label values the
    code never sets, and grouping labels no metric in scope carries."""
    problems = []
    for m in SELECTOR.finditer(expr):
        name, matchers = m.group(1), m.group(2) or ""
        if name not in CATALOGUE_SERIES:
            problems.append(f"{name}: not a series of streams/metrics.py")
            continue
        metric, labels = CATALOGUE_SERIES[name]
        for label, op, value in MATCHER.findall(matchers):
            if label not in labels | TARGET_LABELS:
                problems.append(f"{name}: no label {label!r} (has {sorted(labels)})")
            elif op == "=" and not value.startswith("$"):
                known = KNOWN_VALUES.get(label)
                if known is not None and value not in known:
                    problems.append(f"{name}{{{label}={value!r}}}: not one of {sorted(known)}")
                if (
                    known is None
                    and label not in TARGET_LABELS
                    and value not in metric._documentation
                ):
                    problems.append(f"{name}{{{label}={value!r}}}: value not in the metric's help")
    for m in GROUPING.finditer(expr):
        rest = expr[m.end() :].lstrip()
        # `sum by (x) (arg)`: the labels must exist on a metric inside arg;
        # for on()/ignoring() and trailing clauses, anywhere in the expression.
        scope = _balanced(rest, 0) if m.group(1) == "by" and rest.startswith("(") else expr
        in_scope = {n for n in SELECTOR.findall(scope)}
        names = [n for n, _ in in_scope if n in CATALOGUE_SERIES]
        have = TARGET_LABELS.union(*(CATALOGUE_SERIES[n][1] for n in names)) if names else None
        for label in filter(None, (x.strip() for x in m.group(2).split(","))):
            if have is None:
                if label not in ALL_LABELS | TARGET_LABELS:
                    problems.append(f"{m.group(0)}: no metric has label {label!r}")
            elif label not in have:
                problems.append(f"{m.group(0)}: {label!r} is not a label of {sorted(names)}")
    return problems


def test_promql_checker_catches_mistakes() -> None:
    """The checker the tests below rely on finds what it should."""
    assert (
        promql_problems('sum by (stream) (rate(sepwatch_events_total{stream="dlp_alert"}[5m]))')
        == []
    )
    assert promql_problems("rate(sepwatch_event_total[5m])")  # misspelt name
    assert promql_problems("sepwatch_events")  # a counter without _total
    assert promql_problems("sepwatch_decision_latency_seconds")  # a histogram, not a series
    assert promql_problems('sepwatch_events_total{reason="x"}')  # another metric's label
    assert promql_problems(
        'sepwatch_events_total{stream="dlp_alerts"}'
    )  # the topic, not the stream
    assert promql_problems('sepwatch_dead_letters_total{reason="too_big"}')  # not in its help
    assert promql_problems("sum by (rule) (sepwatch_es_sink_up)")  # label of no metric in scope
    assert promql_problems("sum by (le) (rate(sepwatch_decision_latency_seconds_bucket[5m]))") == []


# -- Prometheus -----------------------------------------------------------------


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, (
        f"{name} is missing: the project's set-up installs it "
        "(apt-get install prometheus prometheus-alertmanager)"
    )
    return path


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)


def test_rule_expressions_use_only_real_metrics_and_labels() -> None:
    problems = {rule["alert"]: p for rule in _rules() if (p := promql_problems(rule["expr"]))}
    assert not problems, problems


def test_rules_carry_what_routing_and_people_need() -> None:
    rules = _rules()
    assert rules
    for rule in rules:
        name = rule["alert"]
        assert "for" in rule, f"{name}: no `for:` (a single bad scrape would page)"
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        # alertmanager.yml sends team=platform to the platform team; findings
        # (alertname SEP-xxx) are the SOC's.
        assert rule["labels"]["team"] == "platform", name
        assert rule["labels"]["service"] == "sepwatch", name
        assert not re.fullmatch(r"SEP-\d{3}", name), f"{name}: that name is a finding's"
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name
        # A label an annotation prints must survive the expression.
        text = " ".join(rule["annotations"].values())
        grouped = {
            x.strip() for m in GROUPING.finditer(rule["expr"]) for x in m.group(2).split(",")
        }
        for label in TEMPLATE_LABEL.findall(text):
            assert label in grouped | TARGET_LABELS | set(rule["labels"]) | ALL_LABELS, (
                name,
                label,
            )


def test_rules_cover_what_the_issue_asks() -> None:
    exprs = " ".join(rule["expr"] for rule in _rules())
    for needed in (
        "sepwatch_consumer_lag_records",
        "sepwatch_es_sink_backlog_findings",
        "sepwatch_es_sink_up",
        "sepwatch_dead_letters_total",
        "sepwatch_events_total",
        "absent_over_time(sepwatch_events_total",
        "sepwatch_notifications_failed_total",
        "sepwatch_watermark_lag_seconds",
        "sepwatch_adapter_records_total",
        f'up{{job="{JOB}"}}',
    ):
        assert needed in exprs, needed


def test_promtool_accepts_the_rules_and_the_config() -> None:
    promtool = _tool("promtool")
    for args in (("check", "rules", RULES), ("check", "config", PROMETHEUS)):
        done = _run(promtool, *args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_scrape_config_matches_the_worker() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == [RULES.name]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == JOB)
    assert job.get("metrics_path", "/metrics") == "/metrics"
    ports = [sd["port"] for sd in job.get("dns_sd_configs", [])] + [
        int(t.rsplit(":", 1)[1]) for sc in job.get("static_configs", []) for t in sc["targets"]
    ]
    assert ports and set(ports) == {Settings.model_fields["web_port"].default}


# The alerts the rules must raise, and must not raise, on made-up series:
# promtool's unit tests, on a copy of the rules without annotations (their
# text is checked above; here what matters is when and with which labels).
OPS = {"team": "platform", "service": "sepwatch"}


def _alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
    return {"exp_labels": {"severity": severity, **OPS, **labels}}


RULE_CASES: list[dict[str, Any]] = [
    {
        "interval": "1m",
        "input_series": [
            {"series": 'up{job="sepwatch", instance="w1:6066"}', "values": "1 1 0x10"},
            {"series": 'up{job="sepwatch", instance="w2:6066"}', "values": "1x12"},
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "SepwatchTargetDown", "exp_alerts": []},
            {
                "eval_time": "6m",
                "alertname": "SepwatchTargetDown",
                "exp_alerts": [_alert("x", "warning", job="sepwatch", instance="w1:6066")],
            },
            {"eval_time": "6m", "alertname": "SepwatchNoWorkers", "exp_alerts": []},
        ],
    },
    {
        "interval": "1m",
        "input_series": [{"series": 'up{job="sepwatch", instance="w1:6066"}', "values": "0x10"}],
        "alert_rule_test": [
            {
                "eval_time": "5m",
                "alertname": "SepwatchNoWorkers",
                "exp_alerts": [_alert("x", "critical")],
            }
        ],
    },
    {
        # Postures stop after 10 minutes, SaaS accesses keep coming, DLP
        # alerts never came at all.
        "interval": "1m",
        "input_series": [
            {
                "series": 'sepwatch_events_total{instance="w1", stream="device_posture"}',
                "values": "0+10x10 100x40",
            },
            {
                "series": 'sepwatch_events_total{instance="w1", stream="saas_access"}',
                "values": "0+10x50",
            },
            {
                "series": 'sepwatch_events_total{instance="w1", stream="control_review"}',
                "values": "0x50",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "8m",
                "alertname": "SepwatchStreamSilent",
                "exp_alerts": [_alert("x", "warning", stream="dlp_alert")],
            },
            {
                "eval_time": "35m",
                "alertname": "SepwatchStreamSilent",
                "exp_alerts": [
                    _alert("x", "warning", stream="device_posture"),
                    _alert("x", "warning", stream="dlp_alert"),
                ],
            },
        ],
    },
    {
        # Postures first seen in a burst at 10 minutes (the counter is born
        # with its value): recent events, not silence; silence once the
        # counter stays flat for the whole window.
        "interval": "1m",
        "input_series": [
            {
                "series": 'sepwatch_events_total{instance="w1", stream="device_posture"}',
                "values": "_x10 50x40",
            },
            {
                "series": 'sepwatch_events_total{instance="w1", stream="saas_access"}',
                "values": "0+1x50",
            },
            {
                "series": 'sepwatch_events_total{instance="w1", stream="dlp_alert"}',
                "values": "0+1x50",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "SepwatchStreamSilent", "exp_alerts": []},
            {
                "eval_time": "40m",
                "alertname": "SepwatchStreamSilent",
                "exp_alerts": [_alert("x", "warning", stream="device_posture")],
            },
        ],
    },
    {
        # w1 retries a down Elasticsearch; w2 has not written yet (the gauge
        # starts at 0) and must not alert.
        "interval": "1m",
        "input_series": [
            {"series": 'sepwatch_es_sink_up{instance="w1"}', "values": "1 1 0x20"},
            {
                "series": 'sepwatch_es_sink_errors_total{instance="w1", kind="unavailable"}',
                "values": "0 0 0+3x20",
            },
            {"series": 'sepwatch_es_sink_up{instance="w2"}', "values": "0x22"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "12m",
                "alertname": "SepwatchEsSinkDown",
                "exp_alerts": [_alert("x", "critical", instance="w1")],
            }
        ],
    },
    {
        # rules: high and growing; es_sink: high but catching up.
        "interval": "1m",
        "input_series": [
            {
                "series": 'sepwatch_consumer_lag_records{consumer="rules", topic="a"}',
                "values": "60000+1000x30",
            },
            {
                "series": 'sepwatch_consumer_lag_records{consumer="es_sink", topic="f"}',
                "values": "90000-1000x30",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "25m",
                "alertname": "SepwatchConsumerLagHigh",
                "exp_alerts": [_alert("x", "warning", consumer="rules")],
            },
            {"eval_time": "25m", "alertname": "SepwatchConsumerLagCritical", "exp_alerts": []},
        ],
    },
    {
        # The hook channel never delivered (no "sent" series at all); email mostly does.
        "interval": "1m",
        "input_series": [
            {
                "series": 'sepwatch_notifications_failed_total{channel="hook",outcome="retried"}',
                "values": "0+6x30",
            },
            {
                "series": 'sepwatch_notifications_failed_total{channel="email", outcome="retried"}',
                "values": "0+1x30",
            },
            {"series": 'sepwatch_notifications_sent_total{channel="email"}', "values": "0+60x30"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "25m",
                "alertname": "SepwatchNotificationsFailing",
                "exp_alerts": [_alert("x", "warning", channel="hook")],
            }
        ],
    },
    {
        # A stage clock 1000 s behind matters while events flow, not at night.
        "interval": "1m",
        "input_series": [
            {
                "series": 'sepwatch_watermark_lag_seconds{instance="w1", stage="user"}',
                "values": "1000x40",
            },
            {
                "series": 'sepwatch_events_total{instance="w1", stream="saas_access"}',
                "values": "0+10x20 200x20",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "18m",
                "alertname": "SepwatchWatermarkLagHigh",
                "exp_alerts": [_alert("x", "warning", stage="user")],
            },
            {"eval_time": "40m", "alertname": "SepwatchWatermarkLagHigh", "exp_alerts": []},
        ],
    },
]


RULE_CASES.append(
    {
        # okta maps nothing from 10 minutes on (a misrouted feed: all dead);
        # m365 keeps mapping; netskope only skips for a while, then maps again.
        "interval": "1m",
        "input_series": [
            {
                "series": 'sepwatch_adapter_records_total{instance="w1", source="okta", '
                'outcome="event"}',
                "values": "0+5x10 50x50",
            },
            {
                "series": 'sepwatch_adapter_records_total{instance="w1", source="okta", '
                'outcome="dead"}',
                "values": "0x10 0+5x50",
            },
            {
                "series": 'sepwatch_adapter_records_total{instance="w1", source="m365", '
                'outcome="event"}',
                "values": "0+3x60",
            },
            {
                "series": 'sepwatch_adapter_records_total{instance="w1", source="netskope", '
                'outcome="skipped"}',
                "values": "0+2x60",
            },
            {
                "series": 'sepwatch_adapter_records_total{instance="w1", source="netskope", '
                'outcome="event"}',
                "values": "0+1x20 20x20 20+1x20",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "30m", "alertname": "SepwatchAdapterMapsNothing", "exp_alerts": []},
            {
                "eval_time": "55m",
                "alertname": "SepwatchAdapterMapsNothing",
                "exp_alerts": [_alert("x", "warning", source="okta")],
            },
        ],
    }
)


def test_rules_fire_when_they_should_and_only_then(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doc))
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": RULE_CASES}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(spec))
    done = _run(promtool, "test", "rules", tmp_path / "tests.yml")
    assert done.returncode == 0, done.stdout + done.stderr


# -- Alertmanager -----------------------------------------------------------------


def test_amtool_accepts_the_alertmanager_config() -> None:
    done = _run(_tool("amtool"), "check-config", ALERTMANAGER)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        # Findings as sepwatch's router labels them: alertname = rule id.
        (
            "alertname=SEP-003 severity=critical entity=HQ group_key=k",
            "soc-oncall-pager,soc-channel",
        ),
        (
            "alertname=SEP-004 severity=critical entity=B012 group_key=k",
            "soc-oncall-pager,soc-channel",
        ),
        ("alertname=SEP-001 severity=high entity=HQ group_key=k", "soc-channel"),
        ("alertname=SEP-002 severity=medium entity=HQ group_key=k", "compliance-digest"),
        # sepwatch's own health, from the Prometheus rules.
        (
            "alertname=SepwatchEsSinkDown severity=critical team=platform service=sepwatch",
            "platform-oncall-pager",
        ),
        (
            "alertname=SepwatchTargetDown severity=warning team=platform service=sepwatch",
            "platform-team",
        ),
        # Nothing falls through silently.
        ("alertname=SomethingElse", "platform-team"),
    ],
)
def test_alertmanager_routes(labels: str, receivers: str) -> None:
    done = _run(
        _tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        *labels.split(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receivers


def test_every_rule_severity_has_a_route() -> None:
    """Each finding severity of the catalogue reaches someone other than the
    fallback receiver."""
    for rule in CATALOGUE.values():
        done = _run(
            _tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            f"alertname={rule.id}",
            f"severity={rule.severity}",
            "entity=HQ",
        )
        assert done.returncode == 0 and done.stdout.strip() != "platform-team", (
            rule.id,
            done.stdout,
        )


# -- Grafana -------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_dashboard_queries_use_only_real_metrics_and_labels() -> None:
    dash = _dashboard()
    problems = {}
    for panel in _panels(dash):
        for target in panel.get("targets", []):
            if p := promql_problems(target["expr"]):
                problems[f"{panel['title']} {target['refId']}"] = p
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*([a-z_]+)\)", q)
            assert m, q
            if m.group(1).startswith("sepwatch_"):
                assert m.group(2) in CATALOGUE_SERIES[m.group(1)][1], q
            if p := promql_problems(m.group(1)):
                problems[var["name"]] = p
    assert not problems, problems


def test_dashboard_shows_every_metric() -> None:
    used = " ".join(t["expr"] for p in _panels(_dashboard()) for t in p.get("targets", []))
    names = {n for n, _ in SELECTOR.findall(used)}
    missing = {metric._name for metric, _ in CATALOGUE_SERIES.values()} - {
        n.removesuffix("_total").removesuffix("_bucket") for n in names
    }
    assert not missing, f"metrics with no panel: {sorted(missing)}"


def test_dashboard_is_importable_and_provisionable() -> None:
    dash = _dashboard()
    assert dash["schemaVersion"] >= 36 and dash["uid"] and dash["title"]
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert {"instance", "entity"} <= set(variables)
    builtins = {"__rate_interval", "__range", "__interval"}
    ids = set()
    cells: set[tuple[int, int]] = set()
    for panel in _panels(dash):
        assert panel["id"] not in ids, panel["title"]
        ids.add(panel["id"])
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var in variables or var in builtins, (panel["title"], var)
    provisioned = yaml.safe_load(GRAFANA_DATASOURCES.read_text())["datasources"]
    assert any(d["type"] == "prometheus" and d.get("isDefault") for d in provisioned)


# -- Kibana ----------------------------------------------------------------------------


def _leaf_fields(props: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out = {}
    for name, spec in props.items():
        path = prefix + name
        if "properties" in spec:
            out.update(_leaf_fields(spec["properties"], path + "."))
        else:
            out[path] = spec["type"]
    return out


FIELDS = _leaf_fields(MAPPINGS["properties"])
AGGREGATABLE = {"keyword", "date", "long"}
KUERY_FIELD = re.compile(r"([A-Za-z@_][\w.@]*)\s*:")


def _saved_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in KIBANA.read_text().splitlines() if line.strip()]


def test_kibana_objects_use_only_fields_of_the_index_template() -> None:
    used: list[tuple[str, str, bool]] = []  # (object id, field, must aggregate)
    for obj in _saved_objects():
        a, oid = obj["attributes"], obj["id"]
        if obj["type"] == "index-pattern":
            used.append((oid, a["timeFieldName"], True))
            used += [(oid, f, False) for f in json.loads(a.get("fieldFormatMap") or "{}")]
        used += [(oid, c, False) for c in a.get("columns", [])]
        used += [(oid, s[0], True) for s in a.get("sort", [])]
        source = json.loads(a.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON", "{}"))
        query = source.get("query", {}).get("query", "")
        used += [(oid, f, False) for f in KUERY_FIELD.findall(query)]
        if "visState" in a:
            for agg in json.loads(a["visState"])["aggs"]:
                if "field" in agg["params"]:
                    used.append((oid, agg["params"]["field"], True))
    assert len(used) > 10
    unknown = [(o, f) for o, f, _ in used if f not in FIELDS]
    assert not unknown, f"not in streams/elastic.MAPPINGS: {unknown}"
    text = [(o, f) for o, f, agg in used if agg and FIELDS[f] not in AGGREGATABLE]
    assert not text, f"aggregated or sorted on a field that cannot be: {text}"


def test_kibana_objects_resolve_their_references() -> None:
    objs = _saved_objects()
    have = {(o["type"], o["id"]) for o in objs}
    assert len(have) == len(objs), "duplicate ids"
    assert {t for t, _ in have} >= {"index-pattern", "search", "visualization", "dashboard"}
    for obj in objs:
        refs = {r["name"]: r for r in obj.get("references", [])}
        for r in refs.values():
            assert (r["type"], r["id"]) in have, (obj["id"], r)
        a = obj["attributes"]
        source = json.loads(a.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON", "{}"))
        if "indexRefName" in source:
            assert refs[source["indexRefName"]]["type"] == "index-pattern", obj["id"]
        if obj["type"] in ("search", "visualization"):
            assert "indexRefName" in source, f"{obj['id']} reads no data view"
        if obj["type"] == "dashboard":
            panels = json.loads(a["panelsJSON"])
            assert len(panels) >= 5
            for p in panels:
                assert refs[p["panelRefName"]]["type"] == p["type"], p
    for obj in objs:
        if obj["type"] == "visualization":
            vis = json.loads(obj["attributes"]["visState"])
            assert vis["title"] == obj["attributes"]["title"] and vis["aggs"], obj["id"]


def test_kibana_data_view_matches_the_findings_indices() -> None:
    view = next(o for o in _saved_objects() if o["type"] == "index-pattern")
    alias = Settings.model_fields["es_index"].default
    pattern = view["attributes"]["title"]
    assert fnmatch.fnmatch(alias, pattern)
    assert fnmatch.fnmatch(index_for(datetime(2026, 11, 26, tzinfo=UTC), alias), pattern)
    assert not fnmatch.fnmatch("sepwatch-other", pattern)
    queries = [
        json.loads(o["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]
        for o in _saved_objects()
        if o["type"] == "search"
    ]
    # The values the searches filter on are values the documents carry.
    for q in queries:
        for field, value in re.findall(r'([\w.]+)\s*:\s*"([^"]*)"', q):
            allowed = {"sepwatch.status": STATUSES, "sepwatch.severity": SEVERITY_SCORE}[field]
            assert value in allowed, (field, value)


# -- docker compose ------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _pinned(script: str, var: str) -> str:
    text = (DEPLOY / "local" / script).read_text()
    m = re.search(rf'^{var}="\$\{{SEPWATCH_{var}:-([^}}]+)\}}"', text, re.M)
    assert m, f"no pinned {var} in {script}"
    return m.group(1)


def test_compose_runs_the_versions_the_scripts_pin() -> None:
    services = _compose()["services"]
    kafka, es = _pinned("kafka.sh", "KAFKA_VERSION"), _pinned("elasticsearch.sh", "ES_VERSION")
    assert services["kafka"]["image"] == f"apache/kafka:{kafka}"
    assert (
        services["elasticsearch"]["image"] == f"docker.elastic.co/elasticsearch/elasticsearch:{es}"
    )
    assert services["kibana"]["image"] == f"docker.elastic.co/kibana/kibana:{es}"
    for name in ("prometheus", "alertmanager", "grafana"):
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", services[name]["image"]), "pin a version"


def test_compose_settings_are_sepwatch_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    env = {k: str(v) for k, v in services["sepwatch"]["environment"].items()}
    dockerfile_env = dict(re.findall(r"(SEPWATCH_\w+)=(\S+)", DOCKERFILE.read_text()))
    for key in [*env, *dockerfile_env]:
        # Settings ignores unknown variables: a misspelt one would do nothing.
        field = key.removeprefix("SEPWATCH_").lower().split("__")[0]
        assert key.startswith("SEPWATCH_") and field in Settings.model_fields, key
    # What the worker is given parses, through the same settings sources.
    monkeypatch.setenv("SEPWATCH_CONFIG", "/nonexistent/sepwatch.toml")
    for key, value in {**dockerfile_env, **env}.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.web_port == int(env["SEPWATCH_WEB_PORT"])
    assert {c.kind for c in settings.channels.values()} == {"alertmanager"}
    am_channel = next(iter(settings.channels.values()))

    # The policy inside the image is the repository's example, copied in.
    policy = env["SEPWATCH_POLICY"]
    assert policy.startswith("/app/") and (ROOT / policy.removeprefix("/app/")).is_file()
    assert re.search(r"^WORKDIR /app$", DOCKERFILE.read_text(), re.M)
    assert re.search(r"^COPY deploy/policy/ deploy/policy/$", DOCKERFILE.read_text(), re.M)

    # Every hop names a service and port that exists.
    kafka_env = services["kafka"]["environment"]
    assert f"INTERNAL://{env['SEPWATCH_BROKER']}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["SEPWATCH_ES_URL"] == "http://elasticsearch:9200"
    port = int(env["SEPWATCH_WEB_PORT"])
    assert port == Settings.model_fields["web_port"].default
    assert str(port) in services["sepwatch"]["expose"]
    scrape = yaml.safe_load(PROMETHEUS.read_text())
    job = next(j for j in scrape["scrape_configs"] if j["job_name"] == JOB)
    assert (
        job["dns_sd_configs"][0]["names"] == ["sepwatch"]
        and job["dns_sd_configs"][0]["port"] == port
    )
    am = scrape["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["alertmanager:9093"] and "alertmanager" in services
    assert am_channel.url.get_secret_value() == "http://alertmanager:9093"
    datasource = yaml.safe_load(GRAFANA_DATASOURCES.read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in services


def test_compose_mounts_and_builds_files_that_exist() -> None:
    compose = _compose()
    mounted = []
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                mounted.append((name, (COMPOSE_DIR / src).resolve()))
            else:
                assert src in compose["volumes"], (name, src)
    assert len(mounted) >= 6
    missing = [(n, p) for n, p in mounted if not p.exists()]
    assert not missing, missing
    for needed in (RULES, PROMETHEUS, ALERTMANAGER, DASHBOARD, KIBANA):
        assert any(p == needed for _, p in mounted), f"{needed.name} is not mounted"

    build = compose["services"]["sepwatch"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    assert context == ROOT and (context / build["dockerfile"]).resolve() == DOCKERFILE
    copies = re.findall(r"^COPY (.+) \S+$", DOCKERFILE.read_text(), re.M)
    sources = [s for line in copies for s in line.split()]
    assert all((context / s).exists() for s in sources), sources
    # Every package pyproject installs is in the image.
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    for pattern in packages["find"]["include"]:
        assert f"{pattern.rstrip('*')}/" in sources, pattern
