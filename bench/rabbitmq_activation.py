"""Activation latency, RabbitMQ: first message into an empty queue -> StreamIsActive `true` (p95 of 20, goal <= 1 s).

Trials as in bench/activation_trials.py: each on a queue of its own (unique name, deleted after), the
trigger in QueueLength mode over AMQP (the adapter's passive queue.declare), the message published with
publisher confirms on an already open pika channel. Run at the default push interval (1 s) and at 0.5 s.

    .venv/bin/python bench/rabbitmq_activation.py [--trials 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.activation_trials import Source, measure
from bench.common import Row, print_rows
from bench.rabbitmq_fanin import delete_queues, queue_metadata, running_broker
from tests.fixtures.rabbitmq import RabbitBroker


def measure_rabbitmq(broker: RabbitBroker, trials: int = 20) -> list[Row]:
    def new_source() -> Source:
        queue = broker.declare("bench-activation")
        channel = broker.channel()
        channel.confirm_delivery()

        def cleanup() -> None:
            channel.connection.close()
            delete_queues(broker, [queue])

        metadata = queue_metadata(broker, queue, value="1")
        return metadata, lambda: channel.basic_publish("", queue, b"first"), cleanup

    return measure(
        "Activation latency, RabbitMQ (AMQP): first message into an empty queue -> StreamIsActive true",
        new_source,
        scaler_flags=[],
        trials=trials,
        how="QueueLength over AMQP; publish with confirms on an open pika channel",
    )


def rows(context: Any) -> list[Row]:
    return measure_rabbitmq(context.service("rabbitmq"))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    with running_broker() as broker:
        found = measure_rabbitmq(broker, args.trials)
    print_rows(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
