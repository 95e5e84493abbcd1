"""The container image, built from the Dockerfile and run as deploy/base's Deployment runs it.

Each test runs the image in its own container (tests/fixtures/scaler_image.py): the image's own USER, a
read-only root with only the Deployment's mounts writable, no capabilities, no-new-privileges, the
Deployment's args, ports, env and limits, on the host network so it reaches the tests' Prometheus and
RabbitMQ on loopback. Built once per run (about 45 s; the base, about 2.5 min, once per machine).
"""

from __future__ import annotations

import json
import signal
import time
import tomllib
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2

from tests.fixtures._manifests import ROOT
from tests.fixtures._util import wait_for
from tests.fixtures.prometheus import Exporter, PrometheusServer, unique_metric
from tests.fixtures.rabbitmq import RabbitBroker
from tests.fixtures.scaler_image import Image, ImageScaler, pod_spec

pytestmark = pytest.mark.slow

# Measured (Debian bookworm base of 130 MB, this project's dependencies): venv 99 MB, image 232 MB. The
# ceilings leave ~10% headroom: a dependency that grows the image past them must be a decision, not an accident.
VENV_CEILING = 110_000_000
IMAGE_CEILING = 255_000_000
# Every path a process in the container might write to; only the Deployment's emptyDir may be writable.
WRITE_PROBES = ["/", "/opt/scaler/bin", "/etc/keda-queue-scaler/config", "/tmp", "/var/tmp", "/run", "/root"]

INSPECT = """
import json, os, importlib.metadata as md
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name as norm
installed = {norm(d.metadata["Name"]): d for d in md.distributions()}
needed, todo = set(), ["keda-queue-scaler"]
while todo:
    name = norm(todo.pop())
    if name in needed or name not in installed:
        continue
    needed.add(name)
    for text in installed[name].requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
size = sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk("/opt/scaler") for f in fs)
print(json.dumps({"installed": sorted(installed), "needed": sorted(needed), "venv_bytes": size}))
"""


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _dev_only_packages() -> set[str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {
        _norm(req.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip())
        for reqs in extras.values()
        for req in reqs
    }
    return names


def test_runs_as_the_images_user_with_nothing_writable_but_the_deployments_mounts(
    image: Image, image_scaler: ImageScaler
) -> None:
    context = pod_spec()["securityContext"]
    assert image.user() == f"{context['runAsUser']}:{context['runAsGroup']}", "image USER = pod's runAsUser"
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{image_scaler.pid()}/status").read_text().splitlines())
    assert status["Uid"].split() == [str(context["runAsUser"])] * 4
    assert status["Gid"].split() == [str(context["runAsGroup"])] * 4
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, "no capabilities at all"
    assert status["NoNewPrivs"].strip() == "1"
    probe = (
        "import os, sys\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        fd = os.open(os.path.join(path, '.probe'), os.O_CREAT | os.O_WRONLY)\n"
        "        os.close(fd); os.unlink(os.path.join(path, '.probe')); print(path)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    writable = image_scaler.exec("python", "-c", probe, *WRITE_PROBES)
    assert writable.returncode == 0, writable.stderr
    assert writable.stdout.split() == ["/tmp"]


def test_health_metrics_and_readiness_answer_through_the_container(image_scaler: ImageScaler) -> None:
    for service in ("", "externalscaler.ExternalScaler"):
        reply = image_scaler.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    ready = httpx.get(f"{image_scaler.http_url}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    metrics = httpx.get(f"{image_scaler.http_url}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert "# TYPE scaler_" in metrics.text
    # The Deployment's config file was read: its log_format is json.
    first = json.loads(image_scaler.logs().splitlines()[0])
    assert first["level"] == "info", first


def test_reads_prometheus_and_rabbitmq_over_the_host_network(
    image_scaler: ImageScaler, prometheus: PrometheusServer, exporter: Exporter, rabbitmq: RabbitBroker
) -> None:
    series = unique_metric("image")
    exporter.set(series, 42)
    prometheus.wait_for_value(series, 42)
    promql = {"adapter": "prometheus", "serverAddress": prometheus.url, "query": series, "threshold": "10"}
    assert image_scaler.value(promql) == 42

    queue = rabbitmq.declare("image")
    rabbitmq.publish(queue, 7)
    rabbitmq.wait_for_messages(queue, 7)
    amqp = {
        "adapter": "rabbitmq",
        "host": rabbitmq.amqp_host(),
        "queueName": queue,
        "mode": "QueueLength",
        "value": "5",
    }
    assert image_scaler.value(amqp) == 7
    assert image_scaler.metric("scaler_source_queries_total", adapter="rabbitmq") >= 1


def test_sigterm_ends_an_open_stream_cleanly_and_exits_0_within_the_grace(
    image_scaler: ImageScaler, prometheus: PrometheusServer, exporter: Exporter
) -> None:
    grace = float(yaml.safe_load((ROOT / "deploy/base/config.yaml").read_text())["shutdown_grace"])
    series = unique_metric("image_stop")
    exporter.set(series, 3)
    prometheus.wait_for_value(series, 3)
    stream = image_scaler.stream_is_active(
        {"adapter": "prometheus", "serverAddress": prometheus.url, "query": series, "threshold": "1"}
    )
    assert stream.next(timeout=20).result is True
    started = time.monotonic()
    image_scaler.proc.send_signal(signal.SIGTERM)  # `podman run` hands it to the scaler, as the kubelet does
    returncode = image_scaler.proc.wait(grace + 20)
    elapsed = time.monotonic() - started
    assert returncode == 0, image_scaler.logs()[-3000:]
    assert elapsed < grace, f"exited {elapsed:.1f} s after SIGTERM; the shutdown grace is {grace} s"
    assert stream.ended.wait(5)
    assert stream.error is None or stream.error.code() == grpc.StatusCode.OK, stream.error
    wait_for(lambda: image_scaler.exec("true").returncode != 0, 10, "the container (run with --rm) to be gone")


def test_pip_check_is_clean_and_only_runtime_dependencies_are_installed(image: Image) -> None:
    check = image.run_once("pip", "check", "--disable-pip-version-check")
    assert check.returncode == 0 and "No broken requirements found" in check.stdout, check.stdout + check.stderr
    inspected = image.run_once("python", "-c", INSPECT)
    assert inspected.returncode == 0, inspected.stderr
    found = json.loads(inspected.stdout)
    installed, needed = set(found["installed"]), set(found["needed"])
    # pip stays for `pip check`; everything else is the scaler's dependency closure, nothing more.
    assert installed - needed == {"pip"}, f"installed but not needed at run time: {sorted(installed - needed)}"
    dev_only = _dev_only_packages() - needed
    assert {"pytest", "grpcio-tools", "mypy", "ruff"} <= dev_only
    assert not installed & dev_only, f"test or dev packages in the image: {sorted(installed & dev_only)}"


def test_image_and_venv_stay_within_the_size_budget(image: Image) -> None:
    inspected = image.run_once("python", "-c", INSPECT)
    assert inspected.returncode == 0, inspected.stderr
    venv = json.loads(inspected.stdout)["venv_bytes"]
    print(
        f"\nbase {image.base.size / 1e6:.0f} MB (built in {image.base.seconds:.0f} s; 0 = cached), "
        f"image {image.image.size / 1e6:.0f} MB (built in {image.image.seconds:.0f} s), venv {venv / 1e6:.0f} MB"
    )
    assert venv < VENV_CEILING, f"the virtualenv is {venv / 1e6:.1f} MB, over its {VENV_CEILING / 1e6:.0f} MB budget"
    assert image.image.size < IMAGE_CEILING, (
        f"the image is {image.image.size / 1e6:.1f} MB, over its {IMAGE_CEILING / 1e6:.0f} MB budget"
    )
