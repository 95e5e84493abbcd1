"""deploy/: every Kustomization renders, every object is valid for Kubernetes and KEDA, and the manifests
agree with the server's own defaults and with each other (ports, probes, names, TLS files, connections)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from adapters.api import SourcePermissionDenied
from scaler.cli import build_parser
from scaler.server import SERVICE_NAME
from scaler.settings import Settings, load_settings

from .fixtures._manifests import (
    DEPLOY,
    EXAMPLES,
    KEDA_KINDS,
    KUSTOMIZATIONS,
    OVERLAYS,
    ROOT,
    config_map_data,
    default_port,
    example_files,
    example_objects,
    find,
    keda_schema,
    load_yaml_documents,
    render,
    scaler_container,
    scaler_triggers,
)

# 1.30 is the first release with ValidatingAdmissionPolicy v1 (and the oldest this install supports);
# the newest schema kubernetes-validate ships catches removals in later releases.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
# Custom resources kubernetes-validate has no schema for; KEDA's are checked against KEDA's CRDs below,
# the others (Prometheus Operator, cert-manager) by their shape in this file.
CUSTOM_KINDS = KEDA_KINDS | {"ServiceMonitor", "PrometheusRule", "Certificate", "ClusterIssuer", "Issuer"}
GRPC_PORT = default_port("grpc_address")
HTTP_PORT = default_port("http_address")


def _label(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_kustomization_renders(directory: str) -> None:
    objects = render(directory)
    assert objects, f"deploy/{directory} rendered no objects"
    assert all({"apiVersion", "kind", "metadata"} <= set(o) for o in objects)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_rendered_objects_are_valid_kubernetes(directory: str, version: str) -> None:
    validated = 0
    for obj in render(directory):
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            raise AssertionError(
                f"deploy/{directory}: {_label(obj)} invalid for Kubernetes {version}: {path}: {exc.message}"
            ) from None
        validated += 1
    assert validated > 0, f"deploy/{directory} has no built-in Kubernetes object to validate"


def _keda_objects() -> list[tuple[str, dict[str, Any]]]:
    found = [(f"deploy/{d}", o) for d in KUSTOMIZATIONS for o in render(d) if o["kind"] in KEDA_KINDS]
    found += [(f"deploy/examples/{name}", o) for name, o in example_objects() if o["kind"] in KEDA_KINDS]
    return found


def test_keda_objects_exist_in_overlays_and_examples() -> None:
    kinds = {o["kind"] for _, o in _keda_objects()}
    assert {"ScaledObject", "ScaledJob", "TriggerAuthentication", "ClusterTriggerAuthentication"} <= kinds


@pytest.mark.parametrize("where,obj", _keda_objects(), ids=lambda v: v if isinstance(v, str) else _label(v))
def test_keda_objects_match_kedas_crd_schema(where: str, obj: dict[str, Any]) -> None:
    assert obj["apiVersion"] == "keda.sh/v1alpha1", f"{where}: {_label(obj)} apiVersion"
    try:
        jsonschema.validate(obj, keda_schema(obj["kind"]), cls=jsonschema.Draft7Validator)
    except jsonschema.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path)
        raise AssertionError(f"{where}: {_label(obj)} rejected by KEDA's CRD schema at {path}: {exc.message}") from None


def test_keda_crd_schema_rejects_an_unknown_field() -> None:
    # The strict schema is what makes the test above worth something: a typo must not pass.
    obj = next(o for _, o in example_objects() if o["kind"] == "ScaledObject")
    obj = yaml.safe_load(yaml.safe_dump(obj))
    obj["spec"]["minReplicas"] = 0
    with pytest.raises(jsonschema.ValidationError, match="minReplicas"):
        jsonschema.validate(obj, keda_schema("ScaledObject"), cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize("directory", ["monitoring", "overlays/production"])
def test_monitoring_objects_have_the_prometheus_operator_shape(directory: str) -> None:
    # No schema for these CRDs is available here; check the fields Prometheus Operator needs.
    objects = render(directory)
    monitor = find(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    endpoints = monitor["spec"]["endpoints"]
    assert endpoints and all(isinstance(e.get("port"), str) for e in endpoints)
    assert isinstance(monitor["spec"]["selector"]["matchLabels"], dict)
    rule = find(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, r
            assert r["alert"] and r["expr"] and r["labels"]["severity"] in ("critical", "warning", "info")
            assert r["annotations"]["summary"]


def test_service_monitor_scrapes_the_metrics_port_of_one_service() -> None:
    base = render("base")
    monitor = find(render("monitoring"), "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    port = monitor["spec"]["endpoints"][0]["port"]
    selected = [
        s for s in base if s["kind"] == "Service" and selector.items() <= s["metadata"].get("labels", {}).items()
    ]
    with_port = [s for s in selected if any(p["name"] == port for p in s["spec"]["ports"])]
    assert len(with_port) == 1, "exactly one Service must carry the metrics port, or pods are scraped twice"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [with_port[0]["metadata"]["namespace"]]
    service_port = next(p for p in with_port[0]["spec"]["ports"] if p["name"] == port)
    assert _container_port(base, service_port["targetPort"]) == HTTP_PORT
    job = with_port[0]["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    rules = yaml.safe_dump(find(render("monitoring"), "PrometheusRule"))
    assert f'up{{job="{job}"}}' in rules, "the ScalerDown alert must watch the job the ServiceMonitor creates"


def test_cert_manager_objects_have_the_shape_cert_manager_needs() -> None:
    objects = render("overlays/production")
    issuers = {o["metadata"]["name"] for o in objects if o["kind"] == "ClusterIssuer"}
    certificates = [o for o in objects if o["kind"] == "Certificate"]
    assert certificates
    for cert in certificates:
        assert cert["apiVersion"] == "cert-manager.io/v1"
        assert cert["spec"]["secretName"]
        assert cert["spec"]["issuerRef"]["kind"] == "ClusterIssuer"
        assert cert["spec"]["issuerRef"]["name"] in issuers, f"{_label(cert)} names a missing issuer"


# --- The base meets the production checklist ---------------------------------------------------------


def _container_port(objects: tuple[dict[str, Any], ...], name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    ports = {p["name"]: p["containerPort"] for p in scaler_container(objects)["ports"]}
    return int(ports[name_or_number])


@pytest.mark.parametrize("directory", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_container_ports_are_the_servers_defaults(directory: str) -> None:
    ports = {p["name"]: p["containerPort"] for p in scaler_container(render(directory))["ports"]}
    assert ports == {"grpc": GRPC_PORT, "http-metrics": HTTP_PORT}


@pytest.mark.parametrize("directory", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_config_file_is_the_one_the_server_is_given_and_it_loads(directory: str, tmp_path: Any) -> None:
    objects = render(directory)
    container = scaler_container(objects)
    args = build_parser().parse_args(container["args"])
    assert args.command == "serve"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert PurePosixPath(args.config) == PurePosixPath(mounts["config"]) / "config.yaml"
    # The rendered config is valid for the settings model (every key a real setting).
    config = config_map_data(objects)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = load_settings({"config": str(path)})
    for key, value in config.items():
        assert key in Settings.model_fields
        if key != "connections":
            loaded = getattr(settings, key)
            assert loaded == type(loaded)(value), f"{key}: the file says {value!r}, the server read {loaded!r}"


@pytest.mark.parametrize("directory", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_pod_outlives_the_servers_shutdown_grace(directory: str, tmp_path: Any) -> None:
    objects = render(directory)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_map_data(objects)))
    grace = load_settings({"config": str(path)}).shutdown_grace
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > grace + 5, "SIGKILL would cut in-flight calls short"


def test_base_runs_locked_down() -> None:
    objects = render("base")
    deployment = find(objects, "Deployment", "keda-queue-scaler")
    pod = deployment["spec"]["template"]["spec"]
    container = scaler_container(objects)
    assert deployment["spec"]["replicas"] == 2
    assert find(objects, "ServiceAccount", pod["serviceAccountName"])["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in keys
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels(deployment).items()
    # Images by tag, never latest, and the tag is this release.
    image = container["image"]
    name, _, tag = image.rpartition(":")
    assert name and tag and tag != "latest", image
    assert tag == _project_version()


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def _project_version() -> str:
    import tomllib

    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def test_disruption_budget_and_services_select_the_pods() -> None:
    objects = render("base")
    labels = pod_labels(find(objects, "Deployment", "keda-queue-scaler"))
    pdb = find(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "maxUnavailable" in pdb["spec"] or pdb["spec"]["minAvailable"] < 2
    services = [o for o in objects if o["kind"] == "Service"]
    assert services
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items(), _label(service)


def test_headless_service_carries_grpc_for_kedas_round_robin() -> None:
    headless = _headless_service(render("base"))
    grpc_ports = [p for p in headless["spec"]["ports"] if p["name"] == "grpc"]
    assert len(grpc_ports) == 1 and grpc_ports[0]["port"] == GRPC_PORT
    assert _container_port(render("base"), grpc_ports[0]["targetPort"]) == GRPC_PORT


def _headless_service(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    headless = [o for o in objects if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1, "deploy/base needs exactly one headless Service"
    return headless[0]


def test_network_policy_admits_grpc_from_keda_and_metrics_from_monitoring() -> None:
    objects = render("base")
    policy = find(objects, "NetworkPolicy")
    labels = pod_labels(find(objects, "Deployment", "keda-queue-scaler"))
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert "Ingress" in policy["spec"]["policyTypes"]
    allowed: dict[int, set[str]] = {}
    for rule in policy["spec"]["ingress"]:
        namespaces = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in rule["from"]}
        for port in rule["ports"]:
            allowed.setdefault(_container_port(objects, port["port"]), set()).update(namespaces)
    assert allowed == {GRPC_PORT: {"keda"}, HTTP_PORT: {"monitoring"}}


# --- Probes: the paths and health services the server answers -----------------------------------------


def probes(directory: str) -> list[dict[str, Any]]:
    container = scaler_container(render(directory))
    return [container[kind] for kind in ("livenessProbe", "readinessProbe", "startupProbe") if kind in container]


@pytest.mark.parametrize("directory", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_probes_use_the_servers_ports_paths_and_health_services(directory: str) -> None:
    found = probes(directory)
    assert len(found) >= 2
    objects = render(directory)
    for probe in found:
        if "grpc" in probe:
            assert probe["grpc"]["port"] == GRPC_PORT
            assert probe["grpc"].get("service", "") in ("", SERVICE_NAME)
        else:
            assert _container_port(objects, probe["httpGet"]["port"]) == HTTP_PORT
            assert probe["httpGet"]["path"] in ("/healthz", "/livez", "/readyz")


def test_tls_overlay_probes_over_http_because_kubelet_grpc_probes_cannot_do_tls() -> None:
    config = config_map_data(render("overlays/production"))
    assert config.get("tls_cert_file")
    assert all("httpGet" in p for p in probes("overlays/production"))


# --- Addresses, TLS material and named connections line up ------------------------------------------


def _service_addresses() -> set[str]:
    service = _headless_service(render("base"))
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    return {f"{name}.{namespace}.svc:{GRPC_PORT}", f"{name}.{namespace}.svc.cluster.local:{GRPC_PORT}"}


def _all_scaler_triggers() -> list[tuple[str, dict[str, Any]]]:
    return [(name, t) for name, obj in example_objects() for t in scaler_triggers(obj)]


def test_every_scaler_address_is_the_headless_service() -> None:
    found = _all_scaler_triggers()
    assert len(found) >= 5
    for name, trigger in found:
        assert trigger["metadata"]["scalerAddress"] in _service_addresses(), f"{name}: scalerAddress"


def test_server_certificate_covers_the_scaler_address() -> None:
    objects = render("overlays/production")
    config = config_map_data(objects)
    server_cert = next(
        o for o in objects if o["kind"] == "Certificate" and o["metadata"]["namespace"] == "keda-scalers"
    )
    hosts = {address.rpartition(":")[0] for address in _service_addresses()}
    assert hosts <= set(server_cert["spec"]["dnsNames"])
    # The scaler reads its cert, key and client CA from the Secret that Certificate fills.
    container = scaler_container(objects)
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    secret_mounts = {
        m["mountPath"]: {v["name"]: v for v in pod["volumes"]}[m["name"]]["secret"]["secretName"]
        for m in container["volumeMounts"]
        if "secret" in {v["name"]: v for v in pod["volumes"]}[m["name"]]
    }
    for setting, key in (("tls_cert_file", "tls.crt"), ("tls_key_file", "tls.key"), ("tls_client_ca_file", "ca.crt")):
        path = PurePosixPath(config[setting])
        assert path.name == key
        assert secret_mounts[str(path.parent)] == server_cert["spec"]["secretName"]


def test_keda_presents_a_client_certificate_from_the_same_ca() -> None:
    objects = render("overlays/production")
    auth = find(objects, "ClusterTriggerAuthentication", "keda-queue-scaler")
    refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"caCert", "tlsClientCert", "tlsClientKey"}
    secrets = {r["name"] for r in refs.values()}
    client_cert = next(o for o in objects if o["kind"] == "Certificate" and o["spec"]["secretName"] in secrets)
    server_cert = next(
        o for o in objects if o["kind"] == "Certificate" and o["metadata"]["namespace"] == "keda-scalers"
    )
    # A ClusterTriggerAuthentication reads Secrets from KEDA's namespace: the client cert must be there.
    assert client_cert["metadata"]["namespace"] == "keda"
    assert "client auth" in client_cert["spec"]["usages"] and "server auth" in server_cert["spec"]["usages"]
    assert client_cert["spec"]["issuerRef"] == server_cert["spec"]["issuerRef"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_examples_authentication_ref_exists_in_every_overlay(overlay: str) -> None:
    names = {
        o["metadata"]["name"] for o in render(f"overlays/{overlay}") if o["kind"] == "ClusterTriggerAuthentication"
    }
    for name, trigger in _all_scaler_triggers():
        ref = trigger.get("authenticationRef")
        if ref and ref.get("kind") == "ClusterTriggerAuthentication":
            assert ref["name"] in names, f"{name}: {ref['name']} is not in deploy/overlays/{overlay}"


def test_named_connections_come_from_the_example_secret() -> None:
    objects = render("overlays/production")
    config = config_map_data(objects)
    container = scaler_container(objects)
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    secret = find(load_yaml_documents(EXAMPLES / "connection-secret.yaml"), "Secret")
    assert secret["metadata"]["namespace"] == find(objects, "Deployment")["metadata"]["namespace"]
    files = [path for conn in config["connections"].values() for path in conn.get("fromFile", {}).values()]
    assert files
    for path in files:
        parent = str(PurePosixPath(path).parent)
        assert mounts[parent]["secret"]["secretName"] == secret["metadata"]["name"], path
        assert PurePosixPath(path).name in secret["stringData"], f"{path}: no such key in connection-secret.yaml"


def test_examples_use_only_connections_the_production_config_defines() -> None:
    connections = config_map_data(render("overlays/production"))["connections"]
    used = 0
    for name, obj in example_objects():
        for trigger in scaler_triggers(obj):
            connection = trigger["metadata"].get("connection")
            if connection is None:
                continue
            used += 1
            assert connection in connections, f"{name}: connection {connection!r} is not in the production config"
            defined = connections[connection]
            assert defined["adapter"] == trigger["metadata"]["adapter"], f"{name}: adapter of {connection}"
            allowed = defined.get("namespaces")
            assert allowed is None or obj["metadata"]["namespace"] in allowed, f"{name}: namespace not allowed"
            fixed = (
                set(defined.get("metadata", {})) | set(defined.get("fromFile", {})) | set(defined.get("fromEnv", {}))
            )
            assert not fixed & set(trigger["metadata"]), f"{name}: overrides a key its connection sets"
    assert used >= 2


def test_every_example_says_what_it_does_on_its_first_line() -> None:
    files = example_files()
    assert {p.name for p in files} >= {
        "rabbitmq-scaledobject.yaml",
        "rabbitmq-scale-from-zero.yaml",
        "pubsub-scaledobject.yaml",
        "prometheus-scaledobject.yaml",
        "rabbitmq-scaledjob.yaml",
        "tls-trigger-authentication.yaml",
        "connection-secret.yaml",
    }
    for path in files:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and len(first) > 30, f"{path.name}: first line must say what it does"


def test_scale_from_zero_example_is_push_and_can_reach_zero() -> None:
    obj = find(load_yaml_documents(EXAMPLES / "rabbitmq-scale-from-zero.yaml"), "ScaledObject")
    assert obj["spec"]["minReplicaCount"] == 0
    assert [t["type"] for t in obj["spec"]["triggers"]] == ["external-push"]


def test_production_includes_monitoring_and_admission() -> None:
    kinds = {o["kind"] for o in render("overlays/production")}
    assert {
        "ServiceMonitor",
        "PrometheusRule",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    } <= kinds
    dashboard = find(render("overlays/production"), "ConfigMap", "keda-queue-scaler-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_dev_overlay_is_one_replica_text_logs_and_plaintext() -> None:
    objects = render("overlays/dev")
    assert find(objects, "Deployment")["spec"]["replicas"] == 1
    config = config_map_data(objects)
    assert config["log_format"] == "text"
    assert not any(k.startswith("tls_") for k in config)
    assert find(objects, "ClusterTriggerAuthentication", "keda-queue-scaler")["spec"] == {}


def test_deploy_tree_has_no_stray_manifests() -> None:
    # Every YAML under deploy/ is reachable from a kustomization or is an example, so none rots unseen.
    used: set[str] = set()
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        data = yaml.safe_load(kustomization.read_text())
        entries = list(data.get("resources", [])) + [p["path"] for p in data.get("patches", [])]
        for gen in data.get("configMapGenerator", []):
            entries += [f.split("=", 1)[-1] for f in gen.get("files", [])]
        used |= {str((kustomization.parent / e).resolve()) for e in entries}
        used.add(str(kustomization.resolve()))
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.parent != EXAMPLES:
            assert str(path.resolve()) in used, f"{path.relative_to(ROOT)} is not used by any kustomization.yaml"


def test_production_connections_name_their_namespaces_and_ambient_identity_is_restricted() -> None:
    config = config_map_data(render("overlays/production"))
    for name, connection in config["connections"].items():
        assert connection.get("namespaces"), f"connection {name}: without namespaces every namespace may use it"
    assert isinstance(config.get("ambient_credentials_namespaces"), list)


def test_production_examples_pass_the_tenant_checks_of_the_production_config() -> None:
    # The real parser, with the production connections (their file and env values stood in for by
    # placeholders): every example trigger is accepted in its own namespace, and refused in another one.
    from adapters.api import AdapterContext
    from adapters.registry import AdapterRegistry
    from scaler.settings import Connection
    from scaler.triggers import TriggerParser

    config = config_map_data(render("overlays/production"))
    connections = {}
    for name, raw in config["connections"].items():
        connection = Connection.model_validate(raw)
        values = dict(connection.metadata)
        for key in [*connection.from_file, *connection.from_env]:
            values[key] = "amqp://u:p@rabbitmq.shop:5672/" if key == "host" else "placeholder-value"
        connections[name] = (connection, values)
    parser = TriggerParser(
        AdapterRegistry(AdapterContext()),
        connections,
        5.0,
        100,
        ambient_namespaces=config["ambient_credentials_namespaces"],
    )
    checked = 0
    for _name, obj in example_objects():
        for trigger in scaler_triggers(obj):
            metadata = {k: str(v) for k, v in trigger["metadata"].items()}
            namespace = obj["metadata"]["namespace"]
            parser.parse(metadata, namespace)
            uses_tenant_grant = "connection" in metadata or metadata.get("adapter") == "gcp-pubsub"
            if uses_tenant_grant:
                with pytest.raises(SourcePermissionDenied):
                    parser.parse(metadata, "another-team")
            checked += 1
    assert checked >= 4
