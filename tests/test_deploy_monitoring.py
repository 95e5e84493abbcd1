"""The alerts, the dashboard and the probes talk about things a running server really has.

A real server answers a few real calls (a real Prometheus as the source), then its /metrics is scraped:
every metric and label named in the PrometheusRule and the Grafana dashboard must be among the series it
exports, every rule file must pass `promtool check rules`, and the alerts fire on the series they watch
(`promtool test rules`). The probes of every overlay are tried against the same server.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from .fixtures._manifests import OVERLAYS, find, render, scaler_container
from .fixtures.prometheus import PrometheusServer
from .fixtures.scaler import ScalerProcess

# Series Prometheus makes itself, not the scaler.
PROMETHEUS_SERIES = {"up"}
# Labels Prometheus Operator's scrape config attaches to every series of a ServiceMonitor target.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
# Aggregation operators may put `by (...)` between their name and their argument.
PROMQL_WORDS |= {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def rule_expressions() -> list[tuple[str, str]]:
    rule = find(render("monitoring"), "PrometheusRule")
    return [(r["alert"], r["expr"]) for g in rule["spec"]["groups"] for r in g["rules"]]


def dashboard() -> dict[str, Any]:
    config_map = find(render("monitoring"), "ConfigMap", "keda-queue-scaler-dashboard")
    (text,) = config_map["data"].values()
    data = json.loads(text)
    assert isinstance(data, dict)
    return data


def dashboard_expressions() -> list[tuple[str, str]]:
    board = dashboard()
    found = [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
    found += [
        (f"variable {v['name']}", v["query"]["query"])
        for v in board["templating"]["list"]
        if isinstance(v.get("query"), dict)
    ]
    return found


def _without_grafana(expr: str) -> str:
    # label_values(metric{...}, label) is Grafana's, not PromQL: keep its selector.
    expr = re.sub(r"label_values\((.*),\s*\w+\)$", r"\1", expr.strip())
    return re.sub(r"\$\{?\w+\}?", "x", expr)


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names used in its matcher) for every series selector in a PromQL expression."""
    expr = _without_grafana(expr)
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    found: list[tuple[str, set[str]]] = []
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{[^}]*\})?", expr):
        name, matcher = match.group(1), match.group(2)
        if not name:
            continue
        rest = expr[match.end(1) :].lstrip()
        if rest.startswith("(") or name in PROMQL_WORDS or _inside_grouping(expr, match.start(1)):
            continue
        if re.fullmatch(r"\d+[smhdwy]?", name) or _inside_range(expr, match.start(1)):
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matcher or ""))
        found.append((name, labels))
    return found


def _inside_grouping(expr: str, position: int) -> bool:
    return any(m.start(2) <= position <= m.end(2) for m in GROUPING.finditer(expr))


def _inside_range(expr: str, position: int) -> bool:
    return any(m.start() < position < m.end() for m in re.finditer(r"\[[^\]]*\]", expr))


def grouping_labels(expr: str) -> set[str]:
    labels: set[str] = set()
    for match in GROUPING.finditer(_without_grafana(expr)):
        labels |= {label.strip() for label in match.group(2).split(",") if label.strip()}
    return labels


# --- A real server with real series ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(prometheus: PrometheusServer) -> Iterator[tuple[ScalerProcess, dict[str, set[str]]]]:
    """A running scaler after real calls, and its exported series: sample name -> label names."""
    process = ScalerProcess(["--cache-ttl", "5", "--push-interval", "0.3"])
    metadata = {
        "scalerAddress": "keda-queue-scaler.keda-scalers.svc:9090",
        "adapter": "prometheus",
        "serverAddress": prometheus.url,
        "query": "vector(3)",
        "threshold": "2",
    }
    name = process.spec(metadata, name="checkout", namespace="shop").metricSpecs[0].metricName
    process.metrics(metadata, name, name="checkout", namespace="shop")
    process.metrics(metadata, name, name="checkout", namespace="shop")  # a cache hit
    process.is_active(metadata, name="checkout", namespace="shop")
    stream = process.stream_is_active(metadata, name="checkout", namespace="shop")
    stream.next()
    with pytest.raises(grpc.RpcError, match="threshold"):
        process.spec({**metadata, "threshold": "0"})  # an INVALID_ARGUMENT series
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(process.metrics_text()):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    stream.cancel()
    yield process, series
    process.stop()


def _series_labels(series: dict[str, set[str]], metric: str) -> set[str]:
    if metric in PROMETHEUS_SERIES:
        return TARGET_LABELS
    labels = set(series[metric])
    # The scrape target's own `namespace` wins; the scaler's is renamed exported_namespace.
    if "namespace" in labels:
        labels.add("exported_namespace")
    return labels | TARGET_LABELS


def _check_expression(where: str, expr: str, series: dict[str, set[str]]) -> None:
    used = selectors(expr)
    assert used, f"{where}: no metric found in {expr!r}"
    known: set[str] = set()
    for metric, labels in used:
        assert metric in series or metric in PROMETHEUS_SERIES, f"{where}: {metric} is not exported by the scaler"
        allowed = _series_labels(series, metric)
        assert labels <= allowed, f"{where}: {metric} has no label(s) {sorted(labels - allowed)}"
        known |= allowed
    missing = grouping_labels(expr) - known - {"le"}
    assert not missing, f"{where}: groups by label(s) {sorted(missing)} that its metrics do not have"


@pytest.mark.parametrize("alert,expr", rule_expressions(), ids=[a for a, _ in rule_expressions()])
def test_alert_uses_only_exported_series(
    alert: str, expr: str, exported: tuple[ScalerProcess, dict[str, set[str]]]
) -> None:
    _check_expression(alert, expr, exported[1])


@pytest.mark.parametrize("title,expr", dashboard_expressions(), ids=[t for t, _ in dashboard_expressions()])
def test_dashboard_uses_only_exported_series(
    title: str, expr: str, exported: tuple[ScalerProcess, dict[str, set[str]]]
) -> None:
    _check_expression(title, expr, exported[1])


def test_the_metric_check_can_fail(exported: tuple[ScalerProcess, dict[str, set[str]]]) -> None:
    with pytest.raises(AssertionError, match="scaler_grpc_request_total is not exported"):
        _check_expression("typo", "rate(scaler_grpc_request_total[5m])", exported[1])
    with pytest.raises(AssertionError, match="no label"):
        _check_expression("typo", 'scaler_cache_requests_total{outcome="hit"}', exported[1])


def test_dashboard_shows_what_operators_need() -> None:
    text = json.dumps(dashboard())
    for metric in (
        "scaler_grpc_requests_total",
        "scaler_grpc_request_duration_seconds_bucket",
        "scaler_scaledobject_reading",
        "scaler_scaledobject_active",
        "scaler_source_query_duration_seconds_bucket",
        "scaler_cache_requests_total",
    ):
        assert metric in text, f"the dashboard has no panel on {metric}"
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_queries_parse_in_prometheus(prometheus: PrometheusServer) -> None:
    # Grafana's variables replaced by plain values, as Grafana does before it sends the query.
    values = {"__rate_interval": "1m", "job": "keda-queue-scaler", "scaler_namespace": "keda-scalers"}
    for title, expr in dashboard_expressions():
        if expr.startswith("label_values("):
            continue
        query = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), ".*"), expr)
        response = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": query}, timeout=10)
        assert response.status_code == 200, f"{title}: {response.json().get('error')}"


# --- promtool: the rule file is valid and the alerts fire -------------------------------------------------


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing (Debian's prometheus package ships it; scripts/system-deps.sh installs it)"
    return path


def _rule_file(tmp_path: Path, *, annotations: bool = True) -> Path:
    groups = find(render("monitoring"), "PrometheusRule")["spec"]["groups"]
    if not annotations:
        # promtool's unit tests compare annotations too; the firing test is about expressions and labels
        # (the templates are checked by `promtool check rules`).
        groups = [
            {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]} for g in groups
        ]
    path = tmp_path / ("rules.yaml" if annotations else "rules-without-annotations.yaml")
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(_rule_file(tmp_path))], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_on_the_series_they_watch(tmp_path: Path) -> None:
    target = 'job="keda-queue-scaler", namespace="keda-scalers", pod="scaler-0"'
    so = f'{target}, exported_namespace="shop", scaledobject="checkout", metric="prometheus-q"'
    rabbitmq = 'adapter="rabbitmq"'
    invalid = 'code="INVALID_ARGUMENT"'
    tests = {
        "rule_files": [str(_rule_file(tmp_path, annotations=False))],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"up{{{target}}}", "values": "0x30"},
                    {
                        "series": f'scaler_source_queries_total{{{target}, adapter="rabbitmq", outcome="success"}}',
                        "values": "0+10x30",
                    },
                    {
                        "series": f'scaler_source_queries_total{{{target}, adapter="rabbitmq", outcome="unavailable"}}',
                        "values": "0+10x30",
                    },
                    # Every query takes between 1 and 2.5 s: p99 above the 2 s line.
                    *(
                        {
                            "series": f'scaler_source_query_duration_seconds_bucket{{{target}, {rabbitmq}, le="{le}"}}',
                            "values": values,
                        }
                        for le, values in (("1", "0x30"), ("2.5", "0+10x30"), ("+Inf", "0+10x30"))
                    ),
                    {"series": f"scaler_scaledobject_reading_age_seconds{{{so}}}", "values": "400x30"},
                    {"series": f"scaler_scaledobject_stale{{{so}}}", "values": "1x30"},
                    {
                        "series": f'scaler_grpc_requests_total{{{target}, method="GetMetrics", code="OK"}}',
                        "values": "0+10x30",
                    },
                    {
                        "series": f'scaler_grpc_requests_total{{{target}, method="GetMetrics", code="UNAVAILABLE"}}',
                        "values": "0+10x30",
                    },
                    {
                        "series": f'scaler_grpc_requests_total{{{target}, method="GetMetricSpec", {invalid}}}',
                        "values": "0+10x30",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "KedaQueueScalerDown",
                        "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "KedaQueueScalerSourceErrors",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", "adapter": "rabbitmq"}}],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "KedaQueueScalerStaleReading",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "exported_namespace": "shop",
                                    "scaledobject": "checkout",
                                    "metric": "prometheus-q",
                                }
                            }
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "KedaQueueScalerServingLastKnown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "exported_namespace": "shop",
                                    "scaledobject": "checkout",
                                    "metric": "prometheus-q",
                                }
                            }
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "KedaQueueScalerRPCErrors",
                        "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "KedaQueueScalerSlowSourceQueries",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", "adapter": "rabbitmq"}}],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "KedaQueueScalerInvalidTriggers",
                        "exp_alerts": [{"exp_labels": {"severity": "info", "method": "GetMetricSpec"}}],
                    },
                ],
            },
            {
                # Errors the caller caused (a bad trigger, KEDA closing a stream) are not the scaler failing.
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'scaler_grpc_requests_total{{{target}, method="{method}", code="{code}"}}',
                        "values": "0+10x30",
                    }
                    for method, code in (
                        ("GetMetrics", "OK"),
                        ("GetMetricSpec", "INVALID_ARGUMENT"),
                        ("StreamIsActive", "CANCELLED"),
                    )
                ],
                "alert_rule_test": [{"eval_time": "20m", "alertname": "KedaQueueScalerRPCErrors", "exp_alerts": []}],
            },
        ],
    }
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run([_promtool(), "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Probes answer on a running server ---------------------------------------------------------------


@pytest.mark.parametrize("directory", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_probes_succeed_against_a_running_server(
    directory: str, exported: tuple[ScalerProcess, dict[str, set[str]]]
) -> None:
    process = exported[0]
    container = scaler_container(render(directory))
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(kind)
        if probe is None:
            continue
        if "grpc" in probe:
            answer = process.health.Check(health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, f"{directory} {kind}"
        else:
            response = httpx.get(f"{process.http_url}{probe['httpGet']['path']}", timeout=5)
            assert response.status_code == 200, f"{directory} {kind}: {response.status_code}"
