"""The README's generated tables are exactly what the CLI prints from the models, so they cannot drift."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def scaler_cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "scaler", *args], capture_output=True, text=True, timeout=60, check=True, cwd=ROOT
    )
    return result.stdout


def readme_block(name: str) -> str:
    match = re.search(
        rf"<!-- BEGIN GENERATED: {name} -->\n(.*?)<!-- END GENERATED: {name} -->", README.read_text(), re.S
    )
    assert match, f"README.md has no generated block '{name}'"
    return match.group(1)


def test_readme_adapter_tables_equal_the_builtin_adapters_markdown() -> None:
    expected = scaler_cli("adapters", "--format", "markdown", "--builtin")
    assert readme_block("adapters") == expected, "README.md is out of date: run `make docs` and commit it"


def test_readme_settings_table_equals_scaler_settings() -> None:
    assert readme_block("settings") == scaler_cli("settings"), "README.md is out of date: run `make docs`"


def test_plugins_are_listed_and_marked_but_kept_out_of_the_readme() -> None:
    adapters = json.loads(scaler_cli("adapters", "--format", "json"))
    plugins = sorted(name for name, info in adapters.items() if info["plugin"])
    builtins = sorted(name for name, info in adapters.items() if not info["plugin"])
    assert plugins, "no plugin adapter is installed: scripts/bootstrap.sh --dev installs examples/redis-adapter"
    assert builtins
    text = scaler_cli("adapters")
    block = readme_block("adapters")
    for name in plugins:
        assert f"{name} (plugin: {adapters[name]['plugin']}):" in text
        assert f"`adapter: {name}`" not in block
    for name in builtins:
        assert f"\n{name}: " in f"\n{text}"
        assert f"#### `adapter: {name}`\n" in block
