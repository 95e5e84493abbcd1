"""`scaler check` run as users run it, against a real scaler (or --local) reading a real Prometheus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures._util import free_port
from tests.fixtures.prometheus import Exporter, PrometheusServer, unique_metric
from tests.fixtures.scaler import ROOT, ScalerProcess

# KEDA's CRD manifests, relative to the repository (the cwd of every CLI run), as a user would pass them.
KEDA_CRDS = "../shared/keda-crds"


def with_crds(args: tuple[str, ...] | list[str]) -> list[str]:
    """`check` / `watch` arguments with `--crds` KEDA's CRDs, so no test depends on this machine's kubectl."""
    args = list(args)
    if args and args[0] in ("check", "watch") and "--crds" not in args:
        return [args[0], "--crds", KEDA_CRDS, *args[1:]]
    return args


def run_cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, crds: bool = True
) -> subprocess.CompletedProcess[str]:
    """`scaler ARGS` as a user runs it; `crds=False` leaves the schema source to the CLI's own search."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCALER_")}
    return subprocess.run(
        [sys.executable, "-m", "scaler", *(with_crds(args) if crds else args)],
        input=stdin,
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**clean, **(env or {})},
        timeout=60,
    )


def prometheus_trigger(
    prometheus: PrometheusServer,
    query: str,
    threshold: str,
    *,
    name: str,
    kind: str = "external",
    scaler_address: str = "scaler.keda.svc:9090",
    **extra: str,
) -> dict[str, Any]:
    metadata = {
        "scalerAddress": scaler_address,
        "adapter": "prometheus",
        "serverAddress": prometheus.url,
        "query": query,
        "threshold": threshold,
        **extra,
    }
    return {"type": kind, "name": name, "metadata": metadata}


def scaled_object(name: str, triggers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"scaleTargetRef": {"name": name}, **spec, "triggers": triggers},
    }


def write(tmp_path: Path, *documents: dict[str, Any]) -> str:
    path = tmp_path / "scaledobject.yaml"
    # JSON is YAML: one document per `---`.
    path.write_text("\n---\n".join(json.dumps(d) for d in documents))
    return str(path)


def row(stdout: str, label: str) -> list[str]:
    """The cells of the table row whose TRIGGER column starts with `label`."""
    for line in stdout.splitlines():
        if line.strip().startswith(label + " "):
            return line.split()
    raise AssertionError(f"no row {label!r} in:\n{stdout}")


@pytest.fixture
def orders_and_invoices(scraped: PrometheusServer, exporter: Exporter) -> tuple[str, str]:
    """Two scraped series: orders waiting 25 (active), invoices waiting 0 (inactive)."""
    orders, invoices = unique_metric("orders_ready"), unique_metric("invoices_ready")
    exporter.set(orders, 25)
    exporter.set(invoices, 0)
    scraped.wait_for_value(orders, 25)
    scraped.wait_for_value(invoices, 0)
    return orders, invoices


def two_trigger_object(prometheus: PrometheusServer, orders: str, invoices: str, **spec: Any) -> dict[str, Any]:
    return scaled_object(
        "orders-worker",
        [
            prometheus_trigger(prometheus, orders, "10", name="orders"),
            prometheus_trigger(prometheus, invoices, "5", name="invoices"),
            {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "80"}},
        ],
        **spec,
    )


def test_two_triggers_one_active_give_the_table_and_replica_count(
    tmp_path: Path, scaler: ScalerProcess, scraped: PrometheusServer, orders_and_invoices: tuple[str, str]
) -> None:
    path = write(tmp_path, two_trigger_object(scraped, *orders_and_invoices, minReplicaCount=0, maxReplicaCount=10))
    result = run_cli("check", path, "--address", scaler.address)
    assert result.returncode == 0, result.stderr
    assert "ScaledObject shop/orders-worker  (min 0, max 10, current 0)" in result.stdout
    header = row(result.stdout, "TRIGGER")
    assert header == ["TRIGGER", "ADAPTER", "METRIC", "READING", "TARGET", "TYPE", "ACTIVE", "REPLICAS"]
    # label, adapter, metric, reading, target, type, active, replicas
    orders = row(result.stdout, "0 orders")[1:]
    assert orders[0] == "orders" and orders[1] == "prometheus" and orders[2] == "prometheus"  # KEDA's name
    assert orders[3:] == ["25", "10", "AverageValue", "yes", "3"]
    assert row(result.stdout, "1 invoices")[4:] == ["0", "5", "AverageValue", "no", "0"]
    assert " ".join(row(result.stdout, "2")) == "2 - not checked (type cpu is not an external scaler)"
    assert "=> 3 replicas: max over triggers 3" in result.stdout


def test_json_output_carries_the_same_decision(
    tmp_path: Path, scaler: ScalerProcess, scraped: PrometheusServer, orders_and_invoices: tuple[str, str]
) -> None:
    path = write(tmp_path, two_trigger_object(scraped, *orders_and_invoices, maxReplicaCount=2))
    result = run_cli("check", path, "--address", scaler.address, "--output", "json")
    assert result.returncode == 0, result.stderr
    [report] = json.loads(result.stdout)["resources"]
    assert (report["replicas"], report["reason"]) == (2, "max over triggers 3, capped at maxReplicaCount 2")
    orders, invoices, cpu = report["triggers"]
    assert orders["active"] is True and orders["metrics"][0]["reading"] == 25 and orders["metrics"][0]["target"] == 10
    assert invoices["active"] is False and invoices["metrics"][0]["reading"] == 0
    assert cpu == {**cpu, "checked": False, "metrics": [], "error": None}


def test_unsafe_ssl_is_warned_about_because_keda_reads_it_too(
    tmp_path: Path, scaler: ScalerProcess, scraped: PrometheusServer, orders_and_invoices: tuple[str, str]
) -> None:
    orders, _ = orders_and_invoices
    obj = scaled_object("orders-worker", [prometheus_trigger(scraped, orders, "10", name="orders", unsafeSsl="true")])
    path = write(tmp_path, obj)
    table = run_cli("check", path, "--address", scaler.address)
    assert table.returncode == 0, table.stderr  # a warning, not a failure
    assert "warning: trigger 0: unsafeSsl is also read by KEDA itself" in table.stdout
    [report] = json.loads(run_cli("check", path, "--address", scaler.address, "-o", "json").stdout)["resources"]
    assert len(report["warnings"]) == 1 and "unsafeSsl" in report["warnings"][0]
    quiet = write(tmp_path, two_trigger_object(scraped, *orders_and_invoices))
    assert "warning" not in run_cli("check", quiet, "--address", scaler.address).stdout


def test_local_and_server_modes_agree(
    tmp_path: Path, scaler: ScalerProcess, scraped: PrometheusServer, orders_and_invoices: tuple[str, str]
) -> None:
    path = write(tmp_path, two_trigger_object(scraped, *orders_and_invoices, minReplicaCount=1))
    server = run_cli("check", path, "--address", scaler.address, "-o", "json", "--current-replicas", "2")
    local = run_cli("check", path, "--local", "-o", "json", "--current-replicas", "2")
    assert (server.returncode, local.returncode) == (0, 0), server.stderr + local.stderr
    assert json.loads(local.stdout) == json.loads(server.stdout)
    assert json.loads(local.stdout)["resources"][0]["replicas"] == 3


def test_every_trigger_inactive_scales_to_idle_replica_count(
    tmp_path: Path, scaler: ScalerProcess, scraped: PrometheusServer, orders_and_invoices: tuple[str, str]
) -> None:
    _, invoices = orders_and_invoices
    triggers = [prometheus_trigger(scraped, invoices, "5", name="invoices")]
    path = write(tmp_path, scaled_object("invoices", triggers, minReplicaCount=2, idleReplicaCount=0))
    result = run_cli("check", path, "--address", scaler.address)
    assert result.returncode == 0, result.stderr
    assert "=> 0 replicas: every trigger inactive: idleReplicaCount" in result.stdout


def test_value_metric_type_uses_current_replicas(
    tmp_path: Path, scaler: ScalerProcess, scraped: PrometheusServer, orders_and_invoices: tuple[str, str]
) -> None:
    orders, _ = orders_and_invoices
    trigger = {**prometheus_trigger(scraped, orders, "10", name="orders"), "metricType": "Value"}
    path = write(tmp_path, scaled_object("orders", [trigger], minReplicaCount=1, maxReplicaCount=50))
    result = run_cli("check", path, "--address", scaler.address, "--current-replicas", "4")
    assert result.returncode == 0, result.stderr
    assert row(result.stdout, "0 orders")[4:] == ["25", "10", "Value", "yes", "10"]  # ceil(4 * 25 / 10)


def test_failed_trigger_shows_its_grpc_status_and_exits_1(
    tmp_path: Path, scaler: ScalerProcess, scraped: PrometheusServer, orders_and_invoices: tuple[str, str]
) -> None:
    orders, _ = orders_and_invoices
    triggers = [
        prometheus_trigger(scraped, orders, "10", name="orders"),
        prometheus_trigger(scraped, "sum(", "10", name="broken"),
    ]
    path = write(tmp_path, scaled_object("orders", triggers))
    result = run_cli("check", path, "--address", scaler.address)
    assert result.returncode == 1
    broken = " ".join(row(result.stdout, "1 broken"))
    assert "error INVALID_ARGUMENT:" in broken and "query" in broken
    assert row(result.stdout, "0 orders")[-1] == "3"
    assert "=> 3 replicas" in result.stdout
    assert "Traceback" not in result.stderr


def test_each_trigger_goes_to_its_own_scaler_address(
    tmp_path: Path, scaler: ScalerProcess, scraped: PrometheusServer, orders_and_invoices: tuple[str, str]
) -> None:
    orders, _ = orders_and_invoices
    triggers = [
        prometheus_trigger(scraped, orders, "10", name="reachable", scaler_address=scaler.address),
        prometheus_trigger(scraped, orders, "10", name="gone", scaler_address=f"127.0.0.1:{free_port()}"),
    ]
    result = run_cli("check", write(tmp_path, scaled_object("orders", triggers)), "-o", "json")
    assert result.returncode == 1
    reachable, gone = json.loads(result.stdout)["resources"][0]["triggers"]
    assert reachable["error"] is None and reachable["metrics"][0]["reading"] == 25
    assert gone["error"]["code"] == "UNAVAILABLE" and gone["metrics"] == []


def test_stdin_with_a_scaled_object_and_a_scaled_job(
    scaler: ScalerProcess, scraped: PrometheusServer, orders_and_invoices: tuple[str, str]
) -> None:
    orders, invoices = orders_and_invoices
    job = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledJob",
        "metadata": {"name": "invoice-batch"},
        "spec": {
            "jobTargetRef": {"template": {"spec": {"containers": [{"name": "batch", "image": "batch:1"}]}}},
            "maxReplicaCount": 20,
            "triggers": [prometheus_trigger(scraped, orders, "4", name="orders")],
        },
    }
    so = scaled_object("invoices", [prometheus_trigger(scraped, invoices, "5", name="invoices")])
    stdin = f"{json.dumps(so)}\n---\n{json.dumps(job)}\n"
    result = run_cli("check", "-", "--address", scaler.address, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert "ScaledObject shop/invoices" in result.stdout
    assert "=> 0 replicas: every trigger inactive and minReplicaCount 0" in result.stdout
    assert "ScaledJob default/invoice-batch  (min 0, max 20)" in result.stdout
    assert "=> 7 jobs: max over triggers 7" in result.stdout  # ceil(25 / 4)


def test_from_env_keys_are_resolved_from_the_environment_like_keda(
    tmp_path: Path, scaler: ScalerProcess, scraped: PrometheusServer, orders_and_invoices: tuple[str, str]
) -> None:
    orders, _ = orders_and_invoices
    trigger = prometheus_trigger(scraped, "unused", "10", name="orders")
    del trigger["metadata"]["query"]
    trigger["metadata"]["queryFromEnv"] = "ORDERS_QUERY"
    path = write(tmp_path, scaled_object("orders", [trigger]))
    result = run_cli("check", path, "--address", scaler.address, env={"ORDERS_QUERY": orders})
    assert result.returncode == 0, result.stderr
    assert row(result.stdout, "0 orders")[4] == "25"


def test_no_secret_reaches_the_output(tmp_path: Path) -> None:
    # An unreachable Prometheus with credentials in its URL: the error names the source, not the password.
    url = f"http://reader:s3cret-pw@127.0.0.1:{free_port()}"
    trigger = {"type": "external", "name": "secret", "metadata": {"adapter": "prometheus", "serverAddress": url,
               "query": "up", "threshold": "1", "password": "an0ther-secret", "username": "reader"}}  # fmt: skip
    path = write(tmp_path, scaled_object("secret", [trigger]))
    for output in ("table", "json"):
        result = run_cli("check", path, "--local", "-o", output)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "UNAVAILABLE" in result.stdout
        assert "s3cret-pw" not in result.stdout + result.stderr
        assert "an0ther-secret" not in result.stdout + result.stderr
