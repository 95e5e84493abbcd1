"""Plugins are found through installed distributions' entry points; a bad plugin is refused, never fatal.

The plugins here are real distributions (a `.dist-info` with `entry_points.txt` beside their modules) on a
directory put on the path, so importlib.metadata finds them exactly as it finds a pip-installed plugin.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from adapters.api import API_VERSION, Adapter, AdapterLoadError, TriggerMetadata, discover_adapter_classes
from adapters.registry import check_adapter_class
from scaler.testing import RunningScaler

ROOT = Path(__file__).resolve().parent.parent

PLUGIN_MODULE = """
from adapters.api import Adapter, SourceKey, TriggerMetadata


class Meta(TriggerMetadata):
    queue: str
    value: float
    activation_value: float = 0.0


class NoTargetMeta(TriggerMetadata):
    queue: str


class FutureAdapter(Adapter[Meta]):
    name = "future-queue"
    metadata_model = Meta
    description = "built against a newer adapter API"
    api_version = {future}

    def source_key(self, metadata):
        return SourceKey(self.name, "x", metadata.queue)

    async def measure(self, metadata):
        return 1.0


class ShadowAdapter(FutureAdapter):
    name = "prometheus"  # tries to take a built-in's name
    api_version = {current}


class GoodAdapter(FutureAdapter):
    name = "good-queue"
    api_version = {current}


class NoTargetAdapter(GoodAdapter):
    name = "no-target-queue"
    metadata_model = NoTargetMeta


class NotAnAdapter:
    name = "plain-class"
"""

ENTRY_POINTS = """
[scaler.adapters]
future-queue = bad_plugins:FutureAdapter
broken-queue = broken_plugin:Whatever
plain-class = bad_plugins:NotAnAdapter
aaa-shadow = bad_plugins:ShadowAdapter
good-queue = bad_plugins:GoodAdapter
no-target-queue = bad_plugins:NoTargetAdapter
"""


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    (tmp_path / "bad_plugins.py").write_text(
        textwrap.dedent(PLUGIN_MODULE).format(future=API_VERSION + 1, current=API_VERSION)
    )
    (tmp_path / "broken_plugin.py").write_text("import a_client_library_that_is_not_installed\n")
    dist_info = tmp_path / "bad_plugins-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-plugins\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    return tmp_path


@pytest.fixture
def on_path(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(plugin_dir))
    yield plugin_dir
    for module in ("bad_plugins", "broken_plugin"):
        sys.modules.pop(module, None)


def test_incompatible_api_version_is_refused_with_both_versions_named() -> None:
    class Old(Adapter[TriggerMetadata]):
        name = "old-queue"
        metadata_model = TriggerMetadata
        api_version = API_VERSION - 1

    with pytest.raises(AdapterLoadError) as caught:
        check_adapter_class(Old, "entry point 'old-queue' = old:Old")
    message = str(caught.value)
    assert "old-queue" in message
    assert f"version {API_VERSION - 1}" in message and f"version {API_VERSION}" in message
    assert "upgrade the plugin or the scaler" in message
    with pytest.raises(AdapterLoadError, match=r"not a subclass of adapters\.api\.Adapter"):
        check_adapter_class(dict, "entry point 'm' = x:Meta")


def test_bad_plugins_are_skipped_with_a_log_line_and_good_ones_load(
    on_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="adapters.registry"):
        found = discover_adapter_classes()
    assert "good-queue" in found
    assert "future-queue" not in found and "plain-class" not in found
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("future-queue" in e and f"version {API_VERSION + 1}" in e for e in errors), errors
    assert any("broken_plugin" in e and "ModuleNotFoundError" in e for e in errors), errors
    assert any("plain-class" in e and "not a subclass" in e for e in errors), errors
    assert "no-target-queue" not in found
    assert any("no-target-queue" in e and "target_key is 'value'" in e for e in errors), errors


def test_a_plugin_cannot_take_a_builtin_adapters_name(on_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="adapters.registry"):
        found = discover_adapter_classes()
    assert found["prometheus"].__module__ == "adapters.prometheus"
    assert any("aaa-shadow" in r.getMessage() and "already taken" in r.getMessage() for r in caplog.records)


def test_server_starts_and_serves_with_broken_plugins_installed(plugin_dir: Path) -> None:
    scaler = RunningScaler(env={"PYTHONPATH": str(plugin_dir)})
    try:
        with pytest.raises(grpc.RpcError) as caught:
            scaler.spec({"adapter": "future-queue", "queue": "orders", "value": "5"})
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown adapter 'future-queue'" in caught.value.details()
        assert "good-queue" in caught.value.details() and "prometheus" in caught.value.details()
        [spec] = scaler.spec({"adapter": "good-queue", "queue": "orders", "value": "5"}).metricSpecs
        assert spec.targetSizeFloat == 5
        logs = scaler.logs()
    finally:
        scaler.stop()
    assert "adapter not loaded" in logs and "future-queue" in logs and "broken_plugin" in logs


def test_cli_lists_the_good_adapters_and_reports_the_bad_ones(plugin_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scaler", "adapters"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(plugin_dir)},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "good-queue (plugin: bad-plugins 0.1):" in result.stdout
    assert "future-queue" not in result.stdout
    assert "future-queue" in result.stderr and f"version {API_VERSION + 1}" in result.stderr
