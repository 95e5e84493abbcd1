"""The built-in Prometheus adapter passes the same contract suite plugins use, against the real Prometheus."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from scaler.testing import AdapterContract, SourceFactory
from tests.fixtures.prometheus import Exporter, PrometheusServer, unique_metric


class ScrapedSeries:
    """One series of the test exporter, read back through Prometheus' scrape."""

    def __init__(self, prometheus: PrometheusServer, exporter: Exporter) -> None:
        self.prometheus = prometheus
        self.exporter = exporter
        self.name = unique_metric("contract_items")

    @property
    def metadata(self) -> Mapping[str, str]:
        return {"serverAddress": self.prometheus.url, "query": self.name, "threshold": "5"}

    def put(self, count: int) -> None:
        self.exporter.set(self.name, count)
        self.prometheus.wait_for_value(self.name, count)


class TestPrometheusAdapterContract(AdapterContract):
    adapter_name = "prometheus"

    @pytest.fixture
    def new_source(self, scraped: PrometheusServer, exporter: Exporter) -> SourceFactory:
        return lambda: ScrapedSeries(scraped, exporter)
