"""The engine never imports the inspection package: scaler/inspect/ sits above it, and only the CLI's
dispatcher (scaler/cli.py) reaches both. Read from the source's AST, so a lazy import inside a function
counts too."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.fixtures.scaler import ROOT

SCALER = ROOT / "scaler"
# The command line dispatches to the server and to the tools; it is the one module above both.
ABOVE_BOTH = {SCALER / "cli.py", SCALER / "__main__.py"}
INSPECT = "scaler.inspect"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Absolute names of every module `path` imports, relative imports resolved."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def engine_modules() -> list[Path]:
    return [
        path
        for path in sorted(SCALER.rglob("*.py"))
        if path not in ABOVE_BOTH and "_generated" not in path.parts and INSPECT not in module_name(path)
    ]


def test_the_engine_imports_nothing_of_the_inspection_package() -> None:
    modules = engine_modules()
    assert {SCALER / "service.py", SCALER / "status.py", SCALER / "replicas.py"} <= set(modules)
    offenders = {
        module_name(path): sorted(n for n in imported(path) if n == INSPECT or n.startswith(INSPECT + "."))
        for path in modules
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_replica_arithmetic_is_one_low_module_both_sides_import() -> None:
    assert "scaler.replicas" in imported(SCALER / "status.py")
    assert "scaler.replicas" in imported(SCALER / "inspect" / "report.py")
    # Low: the arithmetic imports nothing of the scaler.
    assert not {n for n in imported(SCALER / "replicas.py") if n.startswith("scaler")}


def test_the_import_walk_sees_relative_and_lazy_imports() -> None:
    # The check above is only as good as this: inspect/probe.py imports the engine lazily (`--local`).
    probe = imported(SCALER / "inspect" / "probe.py")
    assert {"scaler.server.ScalerServer", "scaler.settings", "scaler.inspect.manifests"} <= probe
    assert "scaler.inspect.check" in imported(SCALER / "cli.py")
