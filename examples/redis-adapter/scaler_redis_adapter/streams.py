"""`adapter: redis-streams`: a consumer group's backlog on a Redis stream, with the keys of KEDA's scaler.

Both numbers come from one XINFO GROUPS call: `pending` (delivered, not yet acknowledged: KEDA's default
`pendingEntriesCount` mode) and, with `lagCount`, `lag` (entries not yet delivered to the group, Redis 7+).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from adapters.api import SourceKey, SourceNotFound, SourcePrecondition

from .connection import RedisAdapter, RedisConnectionMetadata, translate


class RedisStreamsMetadata(RedisConnectionMetadata):
    """Trigger metadata for `adapter: redis-streams` (names as in KEDA's redis-streams scaler)."""

    target_key = "pendingEntriesCount"
    activation_key = "activationLagCount"
    # What a trigger may add to a named connection: the stream, its group and the lag target.
    object_keys = ("stream", "consumerGroup", "lagCount")

    stream: str = Field(min_length=1, description="The stream (key) to read")
    consumer_group: str = Field(min_length=1, description="The consumer group whose backlog is measured")
    pending_entries_count: float = Field(
        5.0, description="Target pending (delivered, unacknowledged) entries per replica (HPA target); must be > 0"
    )
    lag_count: float | None = Field(
        None, gt=0, description="When set, measure the group's lag (undelivered entries) with this target instead"
    )
    activation_lag_count: float = Field(0.0, description="Active when the reading is strictly greater than this")

    @property
    def target(self) -> float:
        return self.lag_count if self.lag_count is not None else self.pending_entries_count

    @property
    def mode(self) -> str:
        return "lag" if self.lag_count is not None else "pending"


class RedisStreamsAdapter(RedisAdapter[RedisStreamsMetadata]):
    name = "redis-streams"
    metadata_model = RedisStreamsMetadata
    description = "A Redis stream consumer group's pending entries, or its lag (XINFO GROUPS)"

    def source_key(self, metadata: RedisStreamsMetadata) -> SourceKey:
        return SourceKey(
            adapter=self.name,
            endpoint=metadata.endpoint,
            object=metadata.consumer_group,
            scope=(metadata.stream,),  # its own field: stream `a/b` + group `c` is not stream `a` + group `b/c`
            mode=metadata.mode,
            identity=self.identity(metadata),
            options=metadata.tls_options,
        )

    def metric_name_hint(self, metadata: RedisStreamsMetadata) -> str:
        return f"{metadata.stream}-{metadata.consumer_group}"

    async def measure(self, metadata: RedisStreamsMetadata) -> float:
        from redis.exceptions import RedisError  # imported by the first reading, not at start-up

        client = await self.client(metadata)
        what = f"stream '{metadata.stream}' on {metadata.endpoint}"
        try:
            groups: list[dict[str, Any]] = await client.xinfo_groups(metadata.stream)
        except RedisError as exc:
            raise translate(exc, what) from None
        group = next((g for g in groups if g.get("name") == metadata.consumer_group), None)
        if group is None:
            raise SourceNotFound(f"{what} has no consumer group '{metadata.consumer_group}'")
        if metadata.mode == "pending":
            return float(group["pending"])
        if "lag" not in group:
            raise SourcePrecondition(f"{what}: `lagCount` needs Redis 7 or later (XINFO GROUPS has no lag field)")
        if group["lag"] is None:
            # Redis cannot tell the lag after entries were deleted from the middle of the stream.
            raise SourcePrecondition(
                f"{what}: Redis cannot compute group '{metadata.consumer_group}''s lag (entries were deleted); "
                "use pendingEntriesCount"
            )
        return float(group["lag"])
