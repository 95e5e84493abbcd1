"""Where `scaler check` takes KEDA's CRD schemas from, and that it says so: `--crds DIR` / SCALER_KEDA_CRDS,
else the cluster's CRDs through kubectl (here a stand-in `kubectl` on PATH that answers from KEDA's real CRD
files and records what it was asked), else the built-in subset.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.test_check import KEDA_CRDS, ROOT, run_cli, scaled_object, write

# A misspelt field: only KEDA's full schema refuses it (the built-in subset lets unknown spec fields through).
MISSPELT = {"minReplicas": 1}


def fake_kubectl(bin_dir: Path, *, context: str = "kind-test", crds: bool = True) -> Path:
    """A `kubectl` that knows one context and serves KEDA's CRD files as `get crd ... -o json` would."""
    items = [
        yaml.safe_load((ROOT / KEDA_CRDS / f"keda.sh_{n}.yaml").read_text()) for n in ("scaledobjects", "scaledjobs")
    ]
    listing = bin_dir / "crds.json"
    listing.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items if crds else []}))
    log = bin_dir / "calls.log"
    script = bin_dir / "kubectl"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "args = sys.argv[1:]\n"
        f"if args == ['config', 'current-context']:\n    print({context!r}); sys.exit(0 if {context!r} else 1)\n"
        "if args[:2] == ['get', 'crd'] and args[-2:] == ['-o', 'json']:\n"
        f"    sys.stdout.write(open({str(listing)!r}).read()); sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return log


def path_with(bin_dir: Path) -> dict[str, str]:
    return {"PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"}


def check(tmp_path: Path, *args: str, env: dict[str, str] | None = None, **spec: Any) -> Any:
    """`scaler check` on a ScaledObject with only a cpu trigger: validated, nothing to ask a scaler."""
    cpu = {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "80"}}
    path = write(tmp_path, scaled_object("orders", [cpu], **spec))
    return run_cli("check", path, "--address", "127.0.0.1:1", *args, env=env, crds=False)


def test_crds_flag_names_the_directory_and_uses_kedas_full_schema(tmp_path: Path) -> None:
    result = check(tmp_path, "--crds", KEDA_CRDS, **MISSPELT)
    assert result.returncode == 2
    assert "spec.minReplicas: is not a field of spec" in result.stderr
    assert f"[checked against KEDA's CRDs from {KEDA_CRDS}]" in result.stderr


def test_env_var_names_the_directory(tmp_path: Path) -> None:
    result = check(tmp_path, env={"SCALER_KEDA_CRDS": str(ROOT / KEDA_CRDS)}, **MISSPELT)
    assert result.returncode == 2
    assert f"[checked against KEDA's CRDs from {ROOT / KEDA_CRDS}]" in result.stderr


def test_a_crds_directory_without_kedas_files_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    result = check(tmp_path, "--crds", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert (
        result.stderr
        == f"scaler: --crds {tmp_path / 'nowhere'}: cannot read keda.sh_scaledobjects.yaml: No such file or directory\n"
    )


def test_kubectl_with_a_current_context_gives_the_clusters_crds(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = fake_kubectl(bin_dir)
    result = check(tmp_path, env=path_with(bin_dir), **MISSPELT)
    assert result.returncode == 2
    assert "spec.minReplicas: is not a field of spec" in result.stderr
    assert "[checked against the cluster's KEDA CRDs (kubectl context kind-test)]" in result.stderr
    assert calls.read_text().splitlines() == [
        "config current-context",
        "get crd scaledobjects.keda.sh scaledjobs.keda.sh -o json",
    ]
    # A valid manifest is checked against the same schemas, and the output says which.
    good = check(tmp_path, "-o", "json", env=path_with(bin_dir))
    assert json.loads(good.stdout)["schemas"] == "the cluster's KEDA CRDs (kubectl context kind-test)"


def test_kubectl_without_kedas_crds_falls_back_and_says_why(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_kubectl(bin_dir, crds=False)
    result = check(tmp_path, "-o", "json", env=path_with(bin_dir), **MISSPELT)
    assert result.returncode == 0, result.stderr  # the subset lets the unknown field through
    assert json.loads(result.stdout)["schemas"] == (
        "the built-in subset (kubectl gave no usable KEDA CRDs in context kind-test)"
    )


def test_kubectl_without_a_context_is_not_asked_for_crds(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = fake_kubectl(bin_dir, context="")
    result = check(tmp_path, env=path_with(bin_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "Manifests checked against the built-in subset (no --crds, no current kubectl context)."
    )
    assert calls.read_text().splitlines() == ["config current-context"]


def test_neither_crds_nor_kubectl_uses_the_built_in_subset(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = check(tmp_path, env=path_with(empty) | {"PATH": f"{empty}{os.pathsep}{Path(sys.executable).parent}"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Manifests checked against the built-in subset (no --crds, no kubectl).")
