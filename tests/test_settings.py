"""Settings precedence (flags > SCALER_* env > YAML file > defaults) and the CLI's handling of bad settings."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scaler.settings import Settings, SettingsError, load_settings


def test_flags_beat_env_beat_file_beat_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("cache_ttl: 3\npush_interval: 4\nsource_timeout: 7\nlog-format: text\n")
    monkeypatch.setenv("SCALER_CONFIG", str(config))
    monkeypatch.setenv("SCALER_CACHE_TTL", "2")
    monkeypatch.setenv("SCALER_PUSH_INTERVAL", "5")
    settings = load_settings({"cache_ttl": "1.5"})
    assert settings.cache_ttl == 1.5  # flag
    assert settings.push_interval == 5  # env over file
    assert settings.source_timeout == 7  # file over default
    assert settings.log_format == "text"  # file, dashes accepted
    assert settings.shutdown_grace == Settings.model_fields["shutdown_grace"].default  # default


def test_defaults_are_the_documented_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SCALER_GRPC_ADDRESS", "SCALER_HTTP_ADDRESS", "SCALER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings({})
    assert settings.grpc_address == "0.0.0.0:9090"
    assert settings.http_address == "0.0.0.0:8080"


def test_invalid_setting_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALER_CACHE_TTL", "-1")
    with pytest.raises(SettingsError, match="cache_ttl"):
        load_settings({})


def test_bad_config_file_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("cache_ttl: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings({"config": str(config)})
    config.write_text("no_such_setting: 1\n")
    with pytest.raises(SettingsError, match="no_such_setting"):
        load_settings({"config": str(config)})


def test_serve_with_a_bad_setting_exits_2_without_a_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scaler", "--grpc-address", "nonsense"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "grpc_address" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("taken", ["grpc", "http"])
def test_serve_on_a_taken_port_exits_1_naming_it_without_a_traceback(taken: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        addresses = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0", taken: address}
        command = [sys.executable, "-m", "scaler", "serve"]
        command += ["--grpc-address", addresses["grpc"], "--http-address", addresses["http"]]
        result = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "cannot start: [Errno 98]" in result.stderr
    assert address.rsplit(":", 1)[1] in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_settings_command_lists_every_setting() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "scaler", "settings"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for name in Settings.model_fields:
        assert f"`{name}`" in out
