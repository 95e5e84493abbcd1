"""The `scaler` command: `scaler [serve]` runs the server; other subcommands inspect and document it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from adapters.api import ENTRY_POINT_GROUP, Adapter, describe_fields, discover_adapter_classes, redact

from . import __version__
from .settings import Settings, SettingsError, load_settings, settings_table

Command = Callable[[argparse.Namespace], int]
DISTRIBUTION = "keda-queue-scaler"
"""This project's distribution: adapters registered by it are the built-ins, every other one is a plugin."""
_COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        _COMMANDS[name] = fn
        return fn

    return register


def _add_serve_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        if name == "connections":
            continue
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=field.description)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaler", description="KEDA external scaler for RabbitMQ, Pub/Sub and Prometheus"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command")
    _add_serve_flags(sub.add_parser("serve", help="run the gRPC server (the default)"))
    adapters = sub.add_parser("adapters", help="list installed adapters and their metadata keys")
    adapters.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    adapters.add_argument(
        "--builtin", action="store_true", help="only the adapters shipped with the scaler (what the README documents)"
    )
    settings = sub.add_parser("settings", help="print every server setting")
    settings.add_argument("--format", choices=("markdown",), default="markdown")
    _add_check_parsers(sub)
    return parser


def _add_check_parsers(sub: Any) -> None:
    from .inspect.flags import add_probe_flags

    check = sub.add_parser("check", help="ask the scaler about a ScaledObject's triggers and show what KEDA would do")
    check.add_argument("files", nargs="+", metavar="FILE", help="ScaledObject / ScaledJob YAML ('-' for stdin)")
    check.add_argument("--output", "-o", choices=("table", "json"), default="table")
    add_probe_flags(check)
    watch = sub.add_parser("watch", help="the check table, refreshed until Ctrl-C, with each reading's history")
    watch.add_argument("files", nargs="+", metavar="FILE", help="ScaledObject / ScaledJob YAML ('-' for stdin)")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
    add_probe_flags(watch)


@command("serve")
def _serve(args: argparse.Namespace) -> int:
    from .logs import configure_logging
    from .server import serve

    flags = {name: getattr(args, name, None) for name in Settings.model_fields}
    try:
        settings = load_settings(flags)
    except SettingsError as exc:
        print(f"scaler: {redact(str(exc))}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return asyncio.run(serve(settings))
    except SettingsError as exc:
        print(f"scaler: {redact(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"scaler: cannot start: {redact(str(exc))}", file=sys.stderr)
        return 1


def adapter_origins() -> dict[str, tuple[str, str]]:
    """`module:attr` of each entry point in the adapter group -> (distribution, version) that registered it."""
    origins = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        origins[ep.value] = (dist.name, dist.version) if dist is not None else ("", "")
    return origins


def installed_adapters(builtin_only: bool = False) -> dict[str, tuple[type[Adapter[Any]], str]]:
    """Every usable adapter by name, with the distribution that registered it ("" for the scaler's own)."""
    origins = adapter_origins()
    found = {}
    for name, cls in sorted(discover_adapter_classes().items()):
        dist, version = origins.get(f"{cls.__module__}:{cls.__qualname__}", ("", ""))
        plugin = "" if dist == DISTRIBUTION else f"{dist or 'unknown'} {version}".strip()
        if builtin_only and plugin:
            continue
        found[name] = (cls, plugin)
    return found


def adapters_markdown(builtin_only: bool = False) -> str:
    """One table per adapter; the README embeds the built-ins' tables exactly (a test keeps them equal)."""
    out = []
    for name, (cls, plugin) in installed_adapters(builtin_only).items():
        origin = f" (plugin: {plugin})" if plugin else ""
        out.append(f"#### `adapter: {name}`{origin}\n\n{cls.description}\n")
        out.append("| key | type | required | default | description |\n|---|---|---|---|---|")
        for row in describe_fields(cls.metadata_model):
            default = "" if row["required"] or row["default"] in (None, "") else f"`{_plain(row['default'])}`"
            note = " (secret: prefer a named connection)" if row["secret"] else ""
            role = ""
            if row["key"] == cls.metadata_model.target_key:
                role = " **HPA target.**"
            elif row["key"] == cls.metadata_model.activation_key:
                role = " **Activation threshold.**"
            out.append(
                f"| `{row['key']}` | {_type(row['type'])} | {'yes' if row['required'] else ''} | {default} | "
                f"{row['description']}{role}{note} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _type(text: str) -> str:
    return text.replace("|", "or").replace("Literal", "one of").replace("SecretStr", "str")


def _plain(value: Any) -> str:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


@command("adapters")
def _adapters(args: argparse.Namespace) -> int:
    if args.format == "markdown":
        print(adapters_markdown(args.builtin), end="")
        return 0
    adapters = installed_adapters(args.builtin)
    if args.format == "json":
        print(
            json.dumps(
                {
                    name: {
                        "description": cls.description,
                        "api_version": cls.api_version,
                        "plugin": plugin or None,
                        "metadata": [
                            {**row, "default": None if row["secret"] else _json(row["default"])}
                            for row in describe_fields(cls.metadata_model)
                        ],
                    }
                    for name, (cls, plugin) in adapters.items()
                },
                indent=2,
            )
        )
        return 0
    for name, (cls, plugin) in adapters.items():
        print(f"{name}{f' (plugin: {plugin})' if plugin else ''}: {cls.description}")
        for row in describe_fields(cls.metadata_model):
            need = "required" if row["required"] else f"default {_plain(row['default'])!r}"
            print(f"  {row['key']:<24} {need:<22} {row['description']}")
    return 0


def _json(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


@command("check")
def _check(args: argparse.Namespace) -> int:
    from .inspect.check import run

    return run(args)


@command("watch")
def _watch(args: argparse.Namespace) -> int:
    from .inspect.watch import run

    return run(args)


@command("settings")
def _settings(args: argparse.Namespace) -> int:
    print(settings_table())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["serve", *argv]
    args = parser.parse_args(argv)
    return _COMMANDS[args.command or "serve"](args)
