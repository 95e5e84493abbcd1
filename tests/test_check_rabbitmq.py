"""`scaler check` on a ScaledObject mixing a RabbitMQ trigger and a Prometheus trigger, on real services."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.rabbitmq import RabbitBroker
from tests.fixtures.scaler import ScalerProcess
from tests.test_check import prometheus_trigger, row, run_cli, scaled_object, write


def rabbitmq_trigger(rabbitmq: RabbitBroker, queue: str, value: str) -> dict[str, object]:
    metadata = {
        "scalerAddress": "scaler.keda.svc:9090",
        "adapter": "rabbitmq",
        "host": rabbitmq.amqp_host(),
        "queueName": queue,
        "mode": "QueueLength",
        "value": value,
    }
    return {"type": "external-push", "name": "orders-queue", "metadata": metadata}


def test_rabbitmq_queue_and_idle_prometheus_trigger_give_the_queue_driven_replica_count(
    tmp_path: Path, scaler: ScalerProcess, rabbitmq: RabbitBroker, prometheus: PrometheusServer
) -> None:
    queue = rabbitmq.declare("check-orders")
    rabbitmq.publish(queue, 23)
    rabbitmq.wait_for_messages(queue, 23)
    document = scaled_object(
        "orders-worker",
        [rabbitmq_trigger(rabbitmq, queue, "5"), prometheus_trigger(prometheus, "vector(0)", "10", name="idle")],
        minReplicaCount=0,
        maxReplicaCount=4,
    )
    path = write(tmp_path, document)
    result = run_cli("check", path, "--address", scaler.address)
    assert result.returncode == 0, result.stderr
    cells = row(result.stdout, "0 orders-queue")
    assert cells[2] == "rabbitmq" and cells[3] == f"rabbitmq-{queue}"
    assert cells[4:] == ["23", "5", "AverageValue", "yes", "5"]  # ceil(23 / 5) = 5 before the clamp
    assert row(result.stdout, "1 idle")[4:] == ["0", "10", "AverageValue", "no", "0"]
    assert "=> 4 replicas" in result.stdout  # clamped by maxReplicaCount

    local = run_cli("check", path, "--local", "--output", "json")
    served = run_cli("check", path, "--address", scaler.address, "--output", "json")
    assert local.returncode == served.returncode == 0, local.stderr + served.stderr
    assert json.loads(local.stdout) == json.loads(served.stdout)


def test_missing_queue_is_reported_per_trigger_with_exit_1(
    tmp_path: Path, scaler: ScalerProcess, rabbitmq: RabbitBroker
) -> None:
    path = write(tmp_path, scaled_object("ghost", [rabbitmq_trigger(rabbitmq, "no-such-queue-check", "5")]))
    result = run_cli("check", path, "--address", scaler.address)
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stdout and "no-such-queue-check" in result.stdout
