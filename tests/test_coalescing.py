"""One source query per TTL, however many callers: counted at Prometheus itself."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from scaler._generated import externalscaler_pb2 as pb
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.scaler import StartScaler, ref


def test_fifty_concurrent_get_metrics_for_one_source_cause_exactly_one_query(
    start_scaler: StartScaler, prometheus: PrometheusServer
) -> None:
    # A long TTL so that the count below can only be 1 if the 50 calls share one in-flight query.
    scaler = start_scaler(cache_ttl=60)
    metadata = {"adapter": "prometheus", "serverAddress": prometheus.url, "query": "vector(12)", "threshold": "1"}
    before = prometheus.query_count()
    requests = [pb.GetMetricsRequest(scaledObjectRef=ref(metadata, name=f"so-{i}"), metricName="m") for i in range(50)]
    with ThreadPoolExecutor(50) as pool:
        futures = [scaler.stub.GetMetrics.future(r, timeout=20) for r in requests]
        results = list(pool.map(lambda f: f.result(), futures))
    assert len(results) == 50
    assert len({r.metricValues[0].metricValueFloat for r in results}) == 1
    assert prometheus.query_count() - before == 1
    assert scaler.metric("scaler_source_queries_total", adapter="prometheus") == 1
    assert scaler.metric("scaler_cache_requests_total", result="miss") == 1
    assert (
        scaler.metric("scaler_cache_requests_total", result="coalesced")
        + scaler.metric("scaler_cache_requests_total", result="hit")
        == 49
    )


def test_keda_poll_pair_and_hpa_read_cost_one_query_per_ttl(
    start_scaler: StartScaler, prometheus: PrometheusServer
) -> None:
    scaler = start_scaler(cache_ttl=60)
    metadata = {"adapter": "prometheus", "serverAddress": prometheus.url, "query": "vector(4)", "threshold": "1"}
    before = prometheus.query_count()
    for i in range(20):  # 20 ScaledObjects, each: GetMetrics, IsActive, and the HPA's GetMetrics
        scaler.metrics(metadata, name=f"so-{i}")
        scaler.is_active(metadata, name=f"so-{i}")
        scaler.metrics(metadata, name=f"so-{i}")
    assert prometheus.query_count() - before == 1


def test_failures_are_cached_so_a_dead_source_is_not_hammered(start_scaler: StartScaler) -> None:
    from tests.fixtures._util import free_port

    scaler = start_scaler(error_cache_ttl=60)
    metadata = {
        "adapter": "prometheus",
        "serverAddress": f"http://127.0.0.1:{free_port()}",
        "query": "up",
        "threshold": "1",
    }
    codes = []
    for i in range(30):
        try:
            scaler.metrics(metadata, name=f"so-{i}")
        except Exception as exc:  # grpc.RpcError
            codes.append(exc.code().name)  # type: ignore[attr-defined]
    assert codes == ["UNAVAILABLE"] * 30
    assert scaler.metric("scaler_source_queries_total", adapter="prometheus", outcome="unavailable") == 1
