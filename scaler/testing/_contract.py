"""The adapter contract as a pytest base class: subclass it in a plugin's tests and pytest runs every check.

    class TestMyAdapterContract(AdapterContract):
        adapter_name = "my-queue"

        @pytest.fixture
        def new_source(self, my_broker) -> SourceFactory:
            return lambda: MyQueue(my_broker)     # .metadata and .put(n), on a fresh object each call

The checks run the adapter in-process (as the engine calls it) and through a `python -m scaler` subprocess
over a real gRPC channel. They are synchronous, so a plugin's test run needs no asyncio plugin.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from pydantic import SecretStr

from adapters.api import (
    ENTRY_POINT_GROUP,
    Adapter,
    AdapterContext,
    AdapterError,
    HttpClients,
    InvalidMetadata,
    SourceKey,
    TriggerMetadata,
    discover_adapter_classes,
    parse_metadata,
    resolve_from_env,
)

from ._process import RunningScaler, SilentServer, free_port

T = TypeVar("T")

_CONNECTION_VARIANTS = {
    "unsafeSsl": "true",
    "caFile": "/etc/ssl/contract-ca.pem",
    "enableTLS": "true",
    "username": "contract-user",
}

# Keys the engine reads itself; a contract source's metadata may carry them, the adapter never sees them.
_ENGINE_KEYS = ("adapter", "scalerAddress")


class ContractSource(Protocol):
    """One measurable object on a real source (a queue, a list, a series), fresh for each test."""

    @property
    def metadata(self) -> Mapping[str, str]:
        """Valid trigger metadata reading this object (with or without `adapter`; the suite sets it)."""

    def put(self, count: int) -> None:
        """Make the object hold exactly `count` items, and return once the source reports them."""


SourceFactory = Callable[[], ContractSource]


class AdapterContract:
    """The checks every adapter must pass. Set `adapter_name` and provide a `new_source` fixture.

    Override `expected_reading()` when the reading is not the item count, `required_keys` when the model
    marks no key as required (e.g. "one of a or b"), and `metadata_for_endpoint()` when the address key
    is neither a URL nor `host:port`.
    """

    adapter_name: ClassVar[str]
    counts: ClassVar[tuple[int, ...]] = (0, 3, 7)
    concurrency: ClassVar[int] = 20
    required_keys: ClassVar[tuple[str, ...] | None] = None
    connection_variants: ClassVar[Mapping[str, str] | None] = None
    """Changes to how the source is reached that must give another source key (readings are cached by key:
    a trigger that verifies TLS must never be served a reading fetched without verification). By default,
    the KEDA-named keys among unsafeSsl, caFile, enableTLS and username that the model declares."""
    source_timeout: ClassVar[float] = 2.0
    """The server's per-source timeout in the end-to-end checks (the silent-source check waits this long)."""

    # --- hooks ------------------------------------------------------------------------------------

    def expected_reading(self, count: int) -> float:
        return float(count)

    def metadata_for_endpoint(self, metadata: Mapping[str, str], host: str, port: int) -> dict[str, str]:
        """The same trigger pointed at another endpoint: the model's first `address_keys` entry is rewritten."""
        model = self.adapter_class().metadata_model
        if not model.address_keys:
            pytest.fail(f"{model.__name__} declares no `address_keys`; override metadata_for_endpoint()")
        key = model.address_keys[0]
        current = metadata.get(key, "")
        parts = urlsplit(current)
        if parts.scheme and parts.netloc:
            rewritten = urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, parts.fragment))
        else:
            rewritten = f"{host}:{port}"
        return {**metadata, key: rewritten}

    # --- helpers ----------------------------------------------------------------------------------

    def adapter_class(self) -> type[Adapter[Any]]:
        found = discover_adapter_classes().get(self.adapter_name)
        if found is None:
            pytest.fail(
                f"no adapter named '{self.adapter_name}' is registered in the '{ENTRY_POINT_GROUP}' entry point group; "
                "is the plugin installed (pip install -e .) in this interpreter?"
            )
        return found

    def full_metadata(self, source: ContractSource) -> dict[str, str]:
        return {"scalerAddress": "scaler.keda:9090", **source.metadata, "adapter": self.adapter_name}

    def parse(self, adapter: Adapter[Any], metadata: Mapping[str, str]) -> TriggerMetadata:
        """What the engine does before measuring: `xFromEnv` resolution, model validation, the source key."""
        values = {k: v for k, v in resolve_from_env(metadata).items() if k not in _ENGINE_KEYS}
        parsed = parse_metadata(adapter.metadata_model, values)
        adapter.source_key(parsed)
        return parsed

    def run(self, body: Callable[[Adapter[Any]], Awaitable[T]]) -> T:
        """Run `body` with a fresh adapter on a fresh event loop; everything it opened is closed after."""

        async def main() -> T:
            adapter = self.adapter_class()(AdapterContext(http=HttpClients(), default_timeout=self.source_timeout * 5))
            try:
                return await body(adapter)
            finally:
                await adapter.close()
                await adapter.context.http.pool.close_all()

        return asyncio.run(main())

    @staticmethod
    def open_clients(adapter: Adapter[Any]) -> int:
        return sum(len(pool) for pool in adapter.pools) + len(adapter.context.http.pool)

    async def measure(self, adapter: Adapter[Any], metadata: TriggerMetadata) -> float:
        # The engine bounds every measure() by a timeout; so do we, so a hanging adapter fails, not hangs.
        async with asyncio.timeout(self.source_timeout * 10):
            return await adapter.measure(metadata)

    def required(self) -> tuple[str, ...]:
        if self.required_keys is not None:
            return self.required_keys
        model = self.adapter_class().metadata_model
        return tuple(field.alias or name for name, field in model.model_fields.items() if field.is_required())

    def assert_invalid(self, metadata: Mapping[str, str], key: str) -> InvalidMetadata:
        adapter = self.adapter_class()(AdapterContext())
        with pytest.raises(InvalidMetadata) as caught:
            self.parse(adapter, metadata)
        assert caught.value.key == key, f"InvalidMetadata names '{caught.value.key}', expected '{key}'"
        assert key in caught.value.message
        return caught.value

    @pytest.fixture(scope="class")
    @classmethod
    def contract_scaler(cls) -> Iterator[RunningScaler]:
        """One server per contract class, with short cache TTLs so readings follow put() quickly."""
        scaler = RunningScaler(
            ["--source-timeout", str(cls.source_timeout), "--cache-ttl", "0.1", "--error-cache-ttl", "0.1"]
        )
        yield scaler
        scaler.stop()

    # --- registration and declaration ---------------------------------------------------------------

    def test_adapter_is_registered_through_its_entry_point(self) -> None:
        cls = self.adapter_class()
        target = f"{cls.__module__}:{cls.__qualname__}"
        # Compared by reference, not loaded: another installed plugin that fails to import is not our failure.
        names = [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value.replace(" ", "") == target]
        assert names, f"{cls.__name__} is found, but through no '{ENTRY_POINT_GROUP}' entry point"
        assert cls.name == self.adapter_name

    def test_model_declares_its_target_and_activation_keys(self, new_source: SourceFactory) -> None:
        model = self.adapter_class().metadata_model
        declared = set(model.keys())
        assert model.target_key in declared
        assert model.activation_key in declared
        assert set(model.address_keys) <= declared
        assert self.adapter_class().description, "describe the adapter: `scaler adapters` and the docs print it"
        parsed = self.parse(self.adapter_class()(AdapterContext()), new_source().metadata)
        assert math.isfinite(parsed.target) and parsed.target > 0

    # --- invalid metadata -------------------------------------------------------------------------

    def test_missing_required_key_is_invalid_metadata_naming_it(self, new_source: SourceFactory) -> None:
        metadata = dict(new_source().metadata)
        required = self.required()
        assert required, "the model marks no key as required: set `required_keys` on the contract class"
        for key in required:
            assert key in metadata, f"the contract source's metadata lacks required key '{key}'"
            self.assert_invalid({k: v for k, v in metadata.items() if k != key}, key)

    @pytest.mark.parametrize("bad", ["many", "0", "-1", "nan"])
    def test_bad_target_is_invalid_metadata_naming_it(self, new_source: SourceFactory, bad: str) -> None:
        key = self.adapter_class().metadata_model.target_key
        self.assert_invalid({**new_source().metadata, key: bad}, key)

    def test_negative_activation_threshold_is_accepted_as_in_keda(self, new_source: SourceFactory) -> None:
        # KEDA's typed config accepts it (the trigger is then always active); a NaN is bad metadata.
        key = self.adapter_class().metadata_model.activation_key
        adapter = self.adapter_class()(AdapterContext())
        assert self.parse(adapter, {**new_source().metadata, key: "-1"}).activation_target == -1
        self.assert_invalid({**new_source().metadata, key: "nan"}, key)

    # --- readings ---------------------------------------------------------------------------------

    def test_readings_are_finite_non_negative_and_track_the_count(self, new_source: SourceFactory) -> None:
        source = new_source()

        async def body(adapter: Adapter[Any]) -> list[float]:
            parsed = self.parse(adapter, source.metadata)
            readings = []
            for count in self.counts:
                source.put(count)
                readings.append(await self.measure(adapter, parsed))
            return readings

        readings = self.run(body)
        for reading in readings:
            assert isinstance(reading, (int, float)) and not isinstance(reading, bool)
            assert math.isfinite(reading) and reading >= 0
        assert readings == [self.expected_reading(c) for c in self.counts]

    def test_concurrent_measures_agree_and_share_one_client(self, new_source: SourceFactory) -> None:
        source = new_source()
        source.put(self.counts[-1])

        async def body(adapter: Adapter[Any]) -> tuple[list[float], int]:
            parsed = self.parse(adapter, source.metadata)
            readings = await asyncio.gather(*(self.measure(adapter, parsed) for _ in range(self.concurrency)))
            return list(readings), self.open_clients(adapter)

        readings, clients = self.run(body)
        assert readings == [self.expected_reading(self.counts[-1])] * self.concurrency
        assert clients == 1, f"{self.concurrency} concurrent reads of one source opened {clients} pooled clients"

    # --- source key -------------------------------------------------------------------------------

    def test_source_key_is_stable_and_shared_by_equal_configs(self, new_source: SourceFactory) -> None:
        metadata = dict(new_source().metadata)
        reordered = dict(reversed(list(metadata.items())))
        adapter_a = self.adapter_class()(AdapterContext())
        adapter_b = self.adapter_class()(AdapterContext())
        key = adapter_a.source_key(self.parse(adapter_a, metadata))
        assert isinstance(key, SourceKey) and key.adapter == self.adapter_name
        assert adapter_a.source_key(self.parse(adapter_a, metadata)) == key
        assert adapter_b.source_key(self.parse(adapter_b, reordered)) == key
        # A key KEDA resolved from the workload's environment is the same config as the plain key.
        target_key = self.adapter_class().metadata_model.target_key
        first = next(k for k in metadata if k not in (*_ENGINE_KEYS, target_key))
        from_env = {k: v for k, v in metadata.items() if k != first} | {f"{first}FromEnv": metadata[first]}
        assert adapter_b.source_key(self.parse(adapter_b, from_env)) == key
        assert hash(key) == hash(adapter_b.source_key(self.parse(adapter_b, reordered)))

    def test_connection_settings_change_the_source_key(self, new_source: SourceFactory) -> None:
        metadata = dict(new_source().metadata)
        adapter = self.adapter_class()(AdapterContext())
        declared = set(adapter.metadata_model.keys())
        # TLS settings matter only with TLS on: compare them on the same trigger with TLS turned on.
        tls = self.with_tls(metadata)
        variants = self.connection_variants
        if variants is None:
            variants = {k: v for k, v in _CONNECTION_VARIANTS.items() if k in declared and tls.get(k) != v}
        for key, value in variants.items():
            base = metadata if key in ("enableTLS", "username") else tls
            before = adapter.source_key(self.parse(adapter, base))
            after = adapter.source_key(self.parse(adapter, {**base, key: value}))
            assert after != before, f"setting {key}={value!r} must change the source key, or readings leak across"

    def with_tls(self, metadata: Mapping[str, str]) -> dict[str, str]:
        """The same trigger with TLS to the source on: `enableTLS`, or an https:// address."""
        model = self.adapter_class().metadata_model
        tls = dict(metadata)
        if "enableTLS" in set(model.keys()):
            tls["enableTLS"] = "true"
        for key in model.address_keys:
            if tls.get(key, "").startswith("http://"):
                tls[key] = "https://" + tls[key].removeprefix("http://")
        return tls

    def test_different_object_has_a_different_source_key(self, new_source: SourceFactory) -> None:
        adapter = self.adapter_class()(AdapterContext())
        one = adapter.source_key(self.parse(adapter, new_source().metadata))
        other = adapter.source_key(self.parse(adapter, new_source().metadata))
        assert one != other, "two different objects on the same source must not share a reading"

    def test_source_key_and_metric_name_hint_hold_no_secret(self, new_source: SourceFactory) -> None:
        metadata = dict(new_source().metadata)
        model = self.adapter_class().metadata_model
        adapter = self.adapter_class()(AdapterContext())
        secret_keys = [
            field.alias or name for name, field in model.model_fields.items() if field.annotation is SecretStr
        ]
        checked = 0
        for key in secret_keys:
            secret = f"contract-secret-{key}-4d1f"
            try:
                parsed = self.parse(adapter, {**metadata, key: secret})
            except InvalidMetadata:
                continue  # this secret alone is not a valid config; the others are checked
            key_text = f"{adapter.source_key(parsed)!s} {adapter.source_key(parsed)!r}"
            assert secret not in key_text
            assert secret not in adapter.metric_name_hint(parsed)
            assert secret in parsed.secrets(), f"'{key}' is a SecretStr but secrets() does not report it"
            checked += 1
        if secret_keys:
            assert checked, f"no secret key ({', '.join(secret_keys)}) could be set on the contract metadata"

    # --- failures, timeouts, cleanup ----------------------------------------------------------------

    def test_unreachable_source_is_unavailable(self, new_source: SourceFactory) -> None:
        metadata = self.metadata_for_endpoint(new_source().metadata, "127.0.0.1", free_port())

        async def body(adapter: Adapter[Any]) -> AdapterError:
            with pytest.raises(AdapterError) as caught:
                await self.measure(adapter, self.parse(adapter, metadata))
            return caught.value

        error = self.run(body)
        assert error.status == "UNAVAILABLE", f"{type(error).__name__}: {error.message}"

    def test_close_is_idempotent_and_releases_clients(self, new_source: SourceFactory) -> None:
        source = new_source()
        source.put(self.counts[-1])

        async def body(adapter: Adapter[Any]) -> tuple[int, int, float]:
            parsed = self.parse(adapter, source.metadata)
            await self.measure(adapter, parsed)
            before = self.open_clients(adapter)
            await adapter.close()
            await adapter.close()
            after = sum(len(pool) for pool in adapter.pools)  # the shared HTTP pool is the engine's to close
            # Closing is not the end of the adapter's life for the pools: the next read opens a new client.
            again = await self.measure(adapter, parsed)
            return before, after, again

        before, after, again = self.run(body)
        assert before >= 1
        assert after == 0
        assert again == self.expected_reading(self.counts[-1])

    def test_idle_clients_are_closed_and_reopened_on_demand(self, new_source: SourceFactory) -> None:
        source = new_source()
        source.put(self.counts[-1])

        async def body(adapter: Adapter[Any]) -> tuple[int, int, int, float]:
            parsed = self.parse(adapter, source.metadata)
            await self.measure(adapter, parsed)
            before = self.open_clients(adapter)
            closed = await adapter.close_idle(0) + await adapter.context.http.pool.close_idle(0)
            return before, closed, self.open_clients(adapter), await self.measure(adapter, parsed)

        before, closed, after, again = self.run(body)
        assert before == closed == 1, f"close_idle(0) closed {closed} of {before} idle clients"
        assert after == 0
        assert again == self.expected_reading(self.counts[-1])

    # --- end to end, through a running server ---------------------------------------------------------

    def test_end_to_end_through_a_running_server(
        self, contract_scaler: RunningScaler, new_source: SourceFactory
    ) -> None:
        source = new_source()
        metadata = self.full_metadata(source)
        model = self.adapter_class().metadata_model
        count = self.counts[-1]
        source.put(count)
        expected = self.expected_reading(count)

        [spec] = contract_scaler.spec(metadata).metricSpecs
        parsed = self.parse(self.adapter_class()(AdapterContext()), metadata)
        assert spec.targetSizeFloat == parsed.target
        assert spec.metricName.startswith(self.adapter_name.lower())
        [value] = contract_scaler.metrics(metadata, spec.metricName).metricValues
        assert value.metricName == spec.metricName
        assert value.metricValueFloat == expected
        assert value.metricValue == round(expected)
        assert contract_scaler.is_active({**metadata, model.activation_key: str(expected - 0.5)}) is True
        assert contract_scaler.is_active({**metadata, model.activation_key: str(expected)}) is False

        source.put(0)
        deadline = time.monotonic() + 10
        while contract_scaler.value(metadata) != self.expected_reading(0) and time.monotonic() < deadline:
            time.sleep(0.1)  # the server's cache TTL is 0.1 s
        assert contract_scaler.value(metadata) == self.expected_reading(0)

    def test_invalid_metadata_is_invalid_argument_through_a_running_server(
        self, contract_scaler: RunningScaler, new_source: SourceFactory
    ) -> None:
        metadata = self.full_metadata(new_source())
        key = self.adapter_class().metadata_model.target_key
        with pytest.raises(grpc.RpcError) as caught:
            contract_scaler.spec({**metadata, key: "0"})
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert key in caught.value.details()

    def test_silent_source_is_deadline_exceeded_through_a_running_server(
        self, contract_scaler: RunningScaler, new_source: SourceFactory
    ) -> None:
        with SilentServer() as silent:
            metadata = self.full_metadata(new_source())
            metadata = self.metadata_for_endpoint(metadata, "127.0.0.1", silent.port)
            with pytest.raises(grpc.RpcError) as caught:
                contract_scaler.metrics(metadata, timeout=self.source_timeout * 15)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value.details()
        # The server answered (its message), not our client giving up (grpc's "Deadline Exceeded").
        assert caught.value.details() != "Deadline Exceeded"
