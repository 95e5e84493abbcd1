"""The status page in a real browser: Debian's chromium driven by Playwright (never a downloaded browser),
against the page of a running scaler fed by KEDA-style calls on a real Prometheus."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.fixtures.prometheus import Exporter, PrometheusServer, unique_metric
from tests.fixtures.scaler import ROOT, ScalerProcess, StartScaler
from tests.test_status import keda_poll

CHROMIUM = Path("/usr/bin/chromium")
# The README's picture is refreshed only when asked (UPDATE_SCREENSHOT=1): a test run must not dirty the tree.
SCREENSHOT = ROOT / "docs" / "status-page.png"
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/system-deps.sh)")
# What the hostile name's onerror (and any injected script) would do if it ever ran.
PAYLOAD = '<img src=x onerror="window.__pwned=1">'


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield browser
        browser.close()


@pytest.fixture
def fed_scaler(
    start_scaler: StartScaler, scraped: PrometheusServer, exporter: Exporter
) -> tuple[ScalerProcess, dict[str, Any]]:
    scaler = start_scaler(cache_ttl=0.2)
    series = {name: unique_metric(f"page_{name.replace('-', '_')}") for name in ("orders", "invoices", "mail")}
    for name, value in (("orders", 42), ("invoices", 0), ("mail", 7)):
        exporter.set(series[name], value)
        scraped.wait_for_value(series[name], value)

    def poll(name: str, namespace: str, metric: str, threshold: str = "10", **extra: str) -> dict[str, str]:
        metadata = {
            "adapter": "prometheus",
            "serverAddress": scraped.url,
            "query": series[metric],
            "threshold": threshold,
            "activationThreshold": "1",
            **extra,
        }
        keda_poll(scaler, metadata, name, namespace)
        return metadata

    feed = {
        "orders": poll("orders-api", "shop", "orders"),
        "invoices": poll("invoice-worker", "billing", "invoices", "5"),
        "mail": poll("mailer", "shop", "mail", "2"),
        "hostile": poll(PAYLOAD, "shop", "mail", "3"),
    }
    # A few readings more, so the sparklines have a history to draw.
    for orders, mail in ((61, 12), (55, 9), (78, 5)):
        exporter.set(series["orders"], orders)
        exporter.set(series["mail"], mail)
        scraped.wait_for_value(series["orders"], orders)
        scraped.wait_for_value(series["mail"], mail)
        poll("orders-api", "shop", "orders")
        poll("mailer", "shop", "mail", "2")
        poll(PAYLOAD, "shop", "mail", "3")
    dead = {
        "adapter": "prometheus",
        "serverAddress": "http://127.0.0.1:1",
        "query": "sum(rate(x[5m]))",
        "threshold": "4",
    }
    with pytest.raises(grpc.RpcError):  # UNAVAILABLE: shows as the last error
        keda_poll(scaler, dead, "reports-exporter", "billing")
    return scaler, {"series": series, "feed": feed, "exporter": exporter, "prometheus": scraped, "poll": poll}


def test_rows_render_filter_works_refresh_updates_and_hostile_names_stay_text(
    browser: Any, fed_scaler: tuple[ScalerProcess, dict[str, Any]]
) -> None:
    scaler, world = fed_scaler
    page = browser.new_page(viewport={"width": 1480, "height": 720})
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    response = page.goto(f"{scaler.http_url}/status")
    assert response is not None and "script-src 'nonce-" in response.headers["content-security-policy"]
    page.wait_for_selector("tbody tr")
    rows = page.locator("tbody tr")
    assert rows.count() == 5
    orders = page.locator("tr[data-scaledobject='orders-api']")
    assert orders.locator(".reading .value").inner_text() == "78"
    assert orders.locator(".replicas").inner_text() == "8"
    assert "active" in orders.inner_text()
    failing = page.locator("tr[data-scaledobject='reports-exporter']")
    assert "UNAVAILABLE" in failing.inner_text() and "failing" in (failing.get_attribute("class") or "")
    assert page.locator("tr svg.spark polyline").count() >= 4

    # The hostile name is text: shown as typed, no <img> from it, its onerror never ran.
    hostile = page.locator("tbody tr .obj", has_text="onerror")
    assert hostile.inner_text() == PAYLOAD
    assert page.locator("tbody img").count() == 0
    assert page.evaluate("window.__pwned") is None
    # An inline script without the nonce is refused by the CSP, and the browser says so.
    page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.__pwned = 2';
                       document.body.appendChild(s); }""")
    assert page.evaluate("window.__pwned") is None
    page.wait_for_timeout(200)
    assert any("Content Security Policy" in line for line in console), console

    # The refresh picks up a changed reading without a reload.
    world["exporter"].set(world["series"]["orders"], 95)
    world["prometheus"].wait_for_value(world["series"]["orders"], 95)
    world["poll"]("orders-api", "shop", "orders")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_function(
        "() => document.querySelector(\"tr[data-scaledobject='orders-api'] .reading .value\").textContent === '95'",
        timeout=20_000,
    )
    assert page.evaluate("window.__notReloaded") is True
    assert orders.locator(".replicas").inner_text() == "10"
    shot = page.screenshot(full_page=True)
    assert shot.startswith(b"\x89PNG") and len(shot) > 10_000, "the page rendered to an image"
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(shot)

    # Filters: by namespace, and only with errors (query parameters, as a bookmark would carry them).
    page.select_option("#namespace", "billing")
    page.click("button[type=submit]")
    page.wait_for_url("**/status?namespace=billing*")
    page.wait_for_selector("tbody tr")
    assert sorted(page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.scaledobject)")) == [
        "invoice-worker",
        "reports-exporter",
    ]
    page.goto(f"{scaler.http_url}/status?errors=1")
    page.wait_for_selector("tbody tr")
    assert page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.scaledobject)") == [
        "reports-exporter"
    ]
    assert page.locator("#errors").is_checked()
    assert not [line for line in console if line.startswith("pageerror")], console
