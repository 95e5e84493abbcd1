"""The Dockerfile's instructions, read and checked, and the install step of its build stage run as written in
a fresh virtualenv, on a build context holding only what the Dockerfile copies and .dockerignore lets through.
These fail in seconds and name the instruction; tests/test_image.py builds the image itself with podman and
runs it as the Deployment does."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .fixtures._manifests import ROOT, default_port, render, scaler_container

DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    image: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined and ARGs in FROM expanded."""
    joined = re.sub(r"\\\n", " ", text)
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            stages.append(Stage(image, parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else ""))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def _stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {args}"
    return value


def test_base_images_are_slim_python_pinned_to_a_version() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: build and runtime"
    for stage in stages:
        repository, _, tag = stage.image.partition(":")
        assert repository in ("python", "docker.io/library/python"), stage.image
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim(-\w+)?", tag), f"{stage.image}: pin a full version tag, not {tag!r}"


def test_base_python_satisfies_the_projects_requires_python() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(x) for x in re.fullmatch(r">=(\d+)\.(\d+)", requires).groups())  # type: ignore[union-attr]
    for stage in _stages():
        version = tuple(int(x) for x in stage.image.partition(":")[2].split("-")[0].split(".")[:2])
        assert version >= minimum, f"{stage.image} is older than requires-python {requires}"


def test_runtime_stage_copies_the_built_environment_and_installs_no_compilers() -> None:
    build, runtime = _stages()[0], _stages()[-1]
    assert any(f"--from={build.name}" in c for c in runtime.all("COPY")), "runtime must copy from the build stage"
    assert not runtime.all("RUN"), "the runtime stage runs nothing: no package manager, no compiler"
    for run in build.all("RUN"):
        assert not re.search(r"\b(gcc|g\+\+|build-essential|apt-get)\b", run), run


def test_runs_as_a_numeric_non_root_user_that_matches_the_pod_security_context() -> None:
    users = _stages()[-1].all("USER")
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER {users[-1]}: numeric and not root, so runAsNonRoot can check it"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    deployment_user = next(o for o in render("base") if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert deployment_user["securityContext"]["runAsUser"] == int(uid)


def test_entrypoint_is_the_scaler_console_script() -> None:
    runtime = _stages()[-1]
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert _exec_form(entrypoint) == ["scaler"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "scaler" in scripts
    env = " ".join(runtime.all("ENV"))
    assert re.search(r"PATH=/opt/scaler/bin:", env), "the virtualenv's bin must be on PATH for ENTRYPOINT"
    (cmd,) = runtime.all("CMD")
    assert _exec_form(cmd) == ["serve"]


def test_exposes_the_servers_default_ports_and_the_manifests_use_them() -> None:
    exposed = {int(p.split("/")[0]) for e in _stages()[-1].all("EXPOSE") for p in e.split()}
    assert exposed == {default_port("grpc_address"), default_port("http_address")}
    ports = {p["containerPort"] for p in scaler_container(render("base"))["ports"]}
    assert ports == exposed


def test_oci_labels_name_the_source_and_this_version() -> None:
    runtime = _stages()[-1]
    labels = " ".join(runtime.all("LABEL"))
    defaults = dict(a.partition("=")[::2] for a in runtime.all("ARG"))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    source = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Source"]
    assert f'org.opencontainers.image.source="{source}"' in labels
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert defaults["VERSION"] == version, "the default VERSION build-arg is the project's version"


def test_runtime_is_ready_for_a_read_only_root_filesystem() -> None:
    env = " ".join(_stages()[-1].all("ENV"))
    # No .pyc written at run time: pip compiled them in the build stage.
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    for run in _stages()[0].all("RUN"):
        assert "--no-compile" not in run and " -e " not in f" {run} ", "install compiled and not editable"


# --- .dockerignore and the install step ------------------------------------------------------------


def _glob(pattern: str) -> re.Pattern[str]:
    # Go's filepath.Match as Docker uses it: `*` and `?` stay within one path segment, `**` crosses them.
    out = ""
    for token in re.split(r"(\*\*/?|\*|\?)", pattern):
        if token in ("**", "**/"):
            out += "(?:.*/)?" if token == "**/" else ".*"
        elif token == "*":
            out += "[^/]*"
        elif token == "?":
            out += "[^/]"
        else:
            out += re.escape(token)
    return re.compile(out)


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a match on a directory covers its files."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob(pattern.removeprefix("!").rstrip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _copied_sources() -> list[str]:
    sources = []
    for copy in _stages()[0].all("COPY"):
        words = [w for w in shlex.split(copy) if not w.startswith("--")]
        sources += words[:-1]
    return sources


def test_dockerignore_sends_what_is_copied_and_nothing_else() -> None:
    patterns = _dockerignore()
    for source in _copied_sources():
        assert not dockerignore_excludes(source, patterns), f"{source} is copied but .dockerignore drops it"
    for kept in ("scaler/__init__.py", "adapters/api.py", "scaler/_generated/externalscaler_pb2.py"):
        assert not dockerignore_excludes(kept, patterns), kept
    for dropped in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "deploy/base/deployment.yaml",
        "scaler/__pycache__/cli.cpython-311.pyc",
        "keda_queue_scaler.egg-info/PKG-INFO",
    ):
        assert dockerignore_excludes(dropped, patterns), f"{dropped} would be sent to the build"


def _build_context(tmp_path: Path) -> Path:
    """What the build stage's WORKDIR holds after its COPY instructions, filtered by .dockerignore."""
    context = tmp_path / "src"
    patterns = _dockerignore()
    for source in _copied_sources():
        origin = ROOT / source
        files = [origin] if origin.is_file() else [p for p in origin.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if dockerignore_excludes(relative, patterns):
                continue
            target = context / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)
    return context


@pytest.mark.slow
def test_build_stage_install_succeeds_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    build = _stages()[0]
    (venv_run,) = [r for r in build.all("RUN") if "-m venv" in r]
    venv_path = shlex.split(venv_run)[-1]
    installs = [r for r in build.all("RUN") if "pip install" in r]
    assert installs, "the build stage installs the project with pip"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    context = _build_context(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    for assignment in shlex.split(" ".join(build.all("ENV"))):
        key, _, value = assignment.partition("=")
        env[key] = value
    # The one difference from the image build: reuse the machine's pip cache so the test stays fast.
    env.pop("PIP_NO_CACHE_DIR", None)
    for command in installs:
        argv = [w.replace(venv_path, str(venv)) for w in shlex.split(command)]
        result = subprocess.run(argv, cwd=context, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    scaler = venv / "bin" / "scaler"
    assert scaler.exists(), "the install did not create the `scaler` console script the ENTRYPOINT runs"
    # Installed, not linked to the source tree, and the entry point works.
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import scaler, adapters.api; print(scaler.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    assert where.startswith(str(venv)), where
    settings = subprocess.run(
        [str(scaler), "settings"], cwd=tmp_path, capture_output=True, text=True, env=env, check=False
    )
    assert settings.returncode == 0 and "grpc_address" in settings.stdout, settings.stderr
    listed = subprocess.run(
        [str(scaler), "adapters", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    built_in = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["scaler.adapters"])
    assert built_in <= _adapter_names(listed.stdout)
    # Bytecode was compiled at install time, so a read-only filesystem costs nothing at start-up.
    assert list((venv / "lib").rglob("scaler/__pycache__/*.pyc"))


def _adapter_names(output: str) -> set[str]:
    data = json.loads(output)
    if isinstance(data, dict):
        return set(data)
    return {item["name"] for item in data}
