"""Both Redis adapters pass the scaler's adapter contract suite against a real Redis.

The adapters are found through the `scaler.adapters` entry points this package declares (so run
`pip install -e .` first): the suite looks them up by name, exactly as the server does.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from conftest import RedisServer

from scaler.testing import AdapterContract, SourceFactory


class RedisList:
    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.key = server.unique_key("list")

    @property
    def metadata(self) -> Mapping[str, str]:
        return {"address": self.server.address, "listName": self.key, "listLength": "5"}

    def put(self, count: int) -> None:
        with self.server.client() as client, client.pipeline() as tx:
            tx.delete(self.key)
            if count:
                tx.rpush(self.key, *[f"job-{i}" for i in range(count)])
            tx.execute()


class PendingEntries:
    """A stream whose consumer group holds exactly `count` delivered, unacknowledged entries."""

    group = "workers"

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.key = server.unique_key("stream")
        self.put(0)

    @property
    def metadata(self) -> Mapping[str, str]:
        return {"address": self.server.address, "stream": self.key, "consumerGroup": self.group}

    def put(self, count: int) -> None:
        with self.server.client() as client:
            client.delete(self.key)
            client.xgroup_create(self.key, self.group, id="$", mkstream=True)
            for i in range(count):
                client.xadd(self.key, {"job": str(i)})
            if count:
                client.xreadgroup(self.group, "worker-1", {self.key: ">"}, count=count)


class TestRedisListContract(AdapterContract):
    adapter_name = "redis"

    @pytest.fixture
    def new_source(self, redis_server: RedisServer) -> SourceFactory:
        return lambda: RedisList(redis_server)


class TestRedisStreamsContract(AdapterContract):
    adapter_name = "redis-streams"

    @pytest.fixture
    def new_source(self, redis_server: RedisServer) -> SourceFactory:
        return lambda: PendingEntries(redis_server)
