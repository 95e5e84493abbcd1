"""Rewrite the README's generated blocks (adapter metadata tables, settings table) from the models."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from scaler.cli import adapters_markdown
from scaler.settings import settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def generated_blocks() -> dict[str, str]:
    return {"adapters": adapters_markdown(builtin_only=True).rstrip(), "settings": settings_table().rstrip()}


def render(text: str) -> str:
    for name, body in generated_blocks().items():
        pattern = re.compile(rf"(<!-- BEGIN GENERATED: {name} -->\n).*?(<!-- END GENERATED: {name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no generated block '{name}'")
        text = pattern.sub(lambda m, body=body: f"{m.group(1)}{body}\n{m.group(2)}", text)
    return text


def main() -> int:
    text = README.read_text()
    new = render(text)
    if new != text:
        README.write_text(new)
        print("README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
