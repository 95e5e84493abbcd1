"""The prose under the table in BENCHMARKS.md: how each figure is measured, and findings for goals not met."""

NOTES = """
## How the figures are measured

- **Load shape for the cluster-scale rows**: 10,000 ScaledObjects over 1,000 Prometheus sources (one series
  each), 10 ScaledObjects per source, each with its own metadata (its own threshold) and name, over 50
  namespaces. Each gets `GetMetricSpec` once, then `GetMetrics` + `IsActive` every 30 s (KEDA's polling
  default) and another `GetMetrics` every 15 s (the HPA's sync through KEDA's metrics server), at random
  phases: 1,333 calls/s. The first 2,000 ScaledObjects (200 sources) are `external-push` triggers holding
  `StreamIsActive` open. The load runs in its own process (bench/keda_load.py, grpc.aio, one channel like
  KEDA's); psutil reads the scaler process's CPU time and RSS over the window after one full 30 s polling
  interval of warm-up. The scaler runs on its defaults (cache TTL 1 s, push interval 1 s).
- **Source queries per TTL**: one scaler per size (empty caches), cache TTL 2 s; a separate process calls
  `GetMetrics` for every ScaledObject round-robin, 64 in flight, for at least 3 TTLs; queries counted at
  Prometheus (`prometheus_http_requests_total{handler="/api/v1/query"}`) and by the scaler
  (`scaler_source_queries_total`). Met when neither count exceeds the TTL windows the calls spanned.
- **Activation latency (Prometheus)**: Prometheus scrapes the exporter every 1 s (`scrape_interval: 1s`);
  the scaler's push interval is 1 s. The latency runs from the timestamp Prometheus stored for the first
  sample with the new value (its scrape time) to the arrival of `StreamIsActive: true` at the client.
- **Throughput / p99**: h2load, 8 connections x 8 streams, the scaler with a warm cache (TTL 1 h) and
  bench/bare_server.py (grpc.aio returning a constant) alternately, 3 rounds, medians.
- **Adapter overhead**: the scaler with a cache TTL of 1 µs (every call is a real query, checked by its
  counter) vs a pooled `httpx.AsyncClient` GET of the same `/api/v1/query`, sequential, alternating blocks.
- **Start**: `python -m scaler` to the first gRPC health `SERVING`, 10 starts; the baseline is `python -c pass`.
- **Profiles**: `BENCH_PROFILE=<dir> make bench` records the scaler with py-spy during the cluster-scale window.
"""
