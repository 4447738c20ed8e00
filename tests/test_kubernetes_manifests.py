"""deploy/kubernetes validated offline: core kinds with kubernetes-validate (strict), the Prometheus Operator
kinds against strict JSON schemas derived from cloudcoil's models of the operator's CRDs (pinned in
requirements.txt), rules with promtool (check and unit tests), the model ConfigMap in a real Triton, and the
Grafana dashboard ConfigMap against the Compose stack's dashboard file."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import requests
import yaml
from cloudcoil.models.prometheus_operator import v1 as operator

from labkit import TRITON_IMAGE, paths, scrape, triton

from .conftest import require_tool

DEPLOY = paths.ROOT / "deploy" / "kubernetes"
# pydantic models generated from the OpenAPI schemas of the Prometheus Operator v0.80.1's CRDs
SCHEMA_PACKAGE = ("cloudcoil-models-prometheus-operator", "0.80.1.0")
MODELS = {
    "PodMonitor": operator.PodMonitor,
    "ServiceMonitor": operator.ServiceMonitor,
    "PrometheusRule": operator.PrometheusRule,
}
# the oldest Kubernetes minor still common in managed clusters, and the newest kubernetes-validate ships
K8S_VERSIONS = ["1.30.0", "1.37.0"]
OPERATOR_GROUP = "monitoring.coreos.com/"


def manifests(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> list[tuple[str, dict]]:
    """(file, object) of every manifest the kustomization applies, plus the alternative ServiceMonitor."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    files = [*kustomization["resources"], "alternatives/servicemonitor.yaml"]
    return [(name, doc) for name in files for doc in manifests(DEPLOY / name)]


MODEL_CONFIGMAP = "triton-model-metrics-demo"
DASHBOARD_CONFIGMAP = "triton-grafana-dashboards"


def of_kind(kind: str, name: str | None = None) -> dict:
    """The one manifest of ``kind`` (and ``name``, where a kind has several)."""
    found = [doc for _, doc in resources() if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def model_configmap() -> dict:
    return of_kind("ConfigMap", MODEL_CONFIGMAP)


CORE = [(f"{name}:{doc['kind']}", doc) for name, doc in resources() if not doc["apiVersion"].startswith(OPERATOR_GROUP)]
OPERATOR = [(f"{name}:{doc['kind']}", doc) for name, doc in resources() if doc["apiVersion"].startswith(OPERATOR_GROUP)]


# ---------------------------------------------------------------------------- layout


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kinds = {doc["kind"] for _, doc in resources()}
    expected = {"Namespace", "ConfigMap", "Deployment", "Service", "PodMonitor", "ServiceMonitor", "PrometheusRule"}
    assert kinds == expected | {"HorizontalPodAutoscaler"}


# ------------------------------------------------------------------ core kinds, strict


def test_kubernetes_validate_ships_schemas_for_a_recent_release():
    """Schemas are inside the wheel (no download at test time), up to Kubernetes 1.37."""
    assert set(K8S_VERSIONS) <= set(kubernetes_validate.utils.all_versions())
    assert kubernetes_validate.latest_version() == K8S_VERSIONS[-1]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name,doc", CORE, ids=[n for n, _ in CORE])
def test_core_kinds_are_valid_strict(name, doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(
    "kind,mutate",
    [
        ("Deployment", lambda d: d["spec"].update(replica=2)),  # typo of replicas
        (
            "Deployment",
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(containerPort="8000"),
        ),
        ("HorizontalPodAutoscaler", lambda d: d["spec"].pop("scaleTargetRef")),  # required
        ("Service", lambda d: d["spec"]["ports"][0].update(targetport="http")),
    ],
    ids=["deployment-typo", "deployment-port-type", "hpa-no-target", "service-typo"],
)
def test_strict_validation_rejects_mistakes(kind, mutate):
    """The validation can fail: a typo or a wrong type is caught."""
    doc = copy.deepcopy(of_kind(kind))
    mutate(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


# --------------------------------------------------------- Prometheus Operator kinds


def strict(schema: dict) -> dict:
    """A model's JSON schema (pydantic's) as strict as the CRD it was generated from, and stricter on fields:

    - unknown fields rejected wherever a schema lists the known ones (the API server would prune them silently);
      objects that list none (free-form, such as metadata.managedFields[].fieldsV1) stay open;
    - no null: pydantic writes an optional field as anyOf [its schema, null], and no field of these CRDs is nullable;
    - Go's inline flags after '^' ('^(?i)...') moved to the front, where Python's re accepts them.
    """
    schema = dict(schema)
    if "anyOf" in schema:
        branches = [strict(branch) for branch in schema.pop("anyOf") if branch != {"type": "null"}]
        if len(branches) == 1:
            schema.update(branches[0])
        else:
            schema["anyOf"] = branches
        if schema.get("default", "") is None:
            del schema["default"]
    for key in ("properties", "$defs"):
        if key in schema:
            schema[key] = {name: strict(sub) for name, sub in schema[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = strict(schema[key])
    if schema.get("pattern", "").startswith("^(?i)"):
        schema["pattern"] = "(?i)^" + schema["pattern"].removeprefix("^(?i)")
    if schema.get("properties") and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


@functools.cache
def operator_schema(kind: str) -> dict:
    schema = strict(MODELS[kind].model_json_schema(by_alias=True))
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})  # the API server's
    return schema


def operator_validate(doc: dict) -> None:
    """Every error of ``doc`` against its kind's strict schema; then the model must accept it and keep every field
    (pydantic ignores unknown fields: the round trip catches one dropped)."""
    schema = operator_schema(doc["kind"])
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    model = MODELS[doc["kind"]].model_validate(doc)
    assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc


def fields(doc: dict) -> dict[tuple, tuple[str | None, dict | None]]:
    """Every field of ``doc`` (a path, "[]" for a list's items) and how its kind's schema checks it: ("property",
    its schema) where the schema names the field, ("map key", the values' schema) for a key of a map such as labels,
    (None, None) where nothing checks it."""
    root = operator_schema(doc["kind"])
    found: dict[tuple, tuple[str | None, dict | None]] = {}

    def walk(value, schema: dict, path: tuple) -> None:
        while "$ref" in schema:
            schema = root["$defs"][schema["$ref"].removeprefix("#/$defs/")]
        if isinstance(value, dict):
            for key, item in value.items():
                if key in schema.get("properties", {}):
                    found[(*path, key)] = ("property", schema["properties"][key])
                    walk(item, schema["properties"][key], (*path, key))
                elif isinstance(schema.get("additionalProperties"), dict):
                    found[(*path, key)] = ("map key", schema["additionalProperties"])
                else:
                    found[(*path, key)] = (None, None)
        elif isinstance(value, list):
            for item in value:
                walk(item, schema.get("items", {}), (*path, "[]"))

    walk(doc, root, ())
    return found


def test_operator_schemas_come_from_the_pinned_package():
    name, version = SCHEMA_PACKAGE
    assert metadata.version(name) == version
    assert f"{name}=={version}" in (paths.ROOT / "requirements.txt").read_text().split()
    for kind in MODELS:
        schema = operator_schema(kind)
        assert schema["properties"]["kind"]["const"] == kind
        assert schema["properties"]["apiVersion"]["const"] == "monitoring.coreos.com/v1"
        assert schema["additionalProperties"] is False


@pytest.mark.parametrize("name,doc", OPERATOR, ids=[n for n, _ in OPERATOR])
def test_operator_kinds_match_the_crd_schemas(name, doc):
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    operator_validate(doc)


MAPS = {"labels", "annotations", "matchLabels"}  # maps of strings, any key


@pytest.mark.parametrize("name,doc", OPERATOR, ids=[n for n, _ in OPERATOR])
def test_every_field_the_manifests_set_is_checked(name, doc):
    """Strictness only guards what the schema names: each field is a declared property with a type, or a key of
    labels, annotations or matchLabels (string values)."""
    found = fields(doc)
    unchecked = [path for path, (how, _) in found.items() if how is None]
    assert not unchecked, unchecked
    for path, (how, schema) in found.items():
        if how == "map key":
            assert path[-2] in MAPS and schema == {"type": "string"}, path
        else:
            assert {"type", "anyOf", "const", "$ref"} & schema.keys(), f"{path} is not typed: {schema}"


def test_the_schemas_check_what_the_manifests_rely_on():
    duration = operator_schema("PodMonitor")["$defs"]["PodMetricsEndpoint"]["properties"]["interval"]["pattern"]
    for kind, endpoints in (("PodMonitor", "podMetricsEndpoints"), ("ServiceMonitor", "endpoints")):
        found = fields(of_kind(kind))
        assert found[("spec", endpoints, "[]", "port")] == ("property", {"type": "string", "title": "Port"})
        for key in ("interval", "scrapeTimeout"):
            assert found[("spec", endpoints, "[]", key)][1]["pattern"] == duration
        assert found[("spec", "selector", "matchLabels", "app.kubernetes.io/name")][0] == "map key"
    found = fields(of_kind("PrometheusRule"))
    assert found[("spec", "groups", "[]", "rules", "[]", "for")][1]["pattern"] == duration
    assert found[("spec", "groups", "[]", "rules", "[]", "expr")][1]["anyOf"] == [
        {"type": "integer"},
        {"type": "string"},
    ]
    assert operator_schema("PrometheusRule")["$defs"]["Rule"]["required"] == ["expr"]
    assert operator_schema("PrometheusRule")["$defs"]["Group"]["required"] == ["name"]


@pytest.mark.parametrize(
    "kind,mutate,expected",
    [
        (
            "PodMonitor",
            lambda d: d["spec"].update(podMetricEndpoints=d["spec"].pop("podMetricsEndpoints")),
            "podMetric",
        ),
        (
            "PodMonitor",
            lambda d: d["spec"]["podMetricsEndpoints"][0].update(prot=d["spec"]["podMetricsEndpoints"][0].pop("port")),
            "'prot' was unexpected",
        ),
        ("PodMonitor", lambda d: d["spec"]["podMetricsEndpoints"][0].update(interval="15 seconds"), "does not match"),
        ("PodMonitor", lambda d: d["spec"]["podMetricsEndpoints"][0].update(interval=None), "None is not of type"),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(port=8002), "is not of type"),
        ("ServiceMonitor", lambda d: d.update(apiVersion="monitoring.coreos.com/v1alpha1"), "was expected"),
        ("PrometheusRule", lambda d: d["spec"]["groups"][1]["rules"][0].update({"for": "5 minutes"}), "does not match"),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(exp="up"), "exp"),
        (
            "PrometheusRule",
            lambda d: d["spec"]["groups"][0]["rules"][0].update(exp=d["spec"]["groups"][0]["rules"][0].pop("expr")),
            "'expr' is a required property",
        ),
        ("PrometheusRule", lambda d: d["metadata"]["labels"].update(release=1), "1 is not of type 'string'"),
    ],
    ids=[
        "podmonitor-typo",
        "podmonitor-port-typo",
        "podmonitor-interval",
        "podmonitor-null",
        "servicemonitor-port-type",
        "servicemonitor-api-version",
        "rule-for",
        "rule-typo",
        "rule-expr-typo",
        "rule-label-type",
    ],
)
def test_crd_validation_rejects_mistakes(kind, mutate, expected):
    doc = copy.deepcopy(of_kind(kind))
    mutate(doc)
    with pytest.raises(AssertionError, match=expected):
        operator_validate(doc)


def test_monitors_select_the_deployment_pods():
    template = of_kind("Deployment")["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    port_names = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    podmonitor, servicemonitor, service = of_kind("PodMonitor"), of_kind("ServiceMonitor"), of_kind("Service")
    assert podmonitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert servicemonitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in podmonitor["spec"]["podMetricsEndpoints"]} == {"metrics"} <= port_names
    assert {e["port"] for e in servicemonitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    for doc in (podmonitor, servicemonitor, of_kind("PrometheusRule")):
        assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # kube-prometheus-stack's selectors


def test_deployment_runs_the_course_release():
    container = of_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == TRITON_IMAGE
    assert "--metrics-port=8002" in container["args"] and "--allow-metrics=true" in container["args"]


def test_deployment_keeps_the_image_entrypoint():
    """``args``, never ``command``: a command replaces the image's ENTRYPOINT (/opt/nvidia/nvidia_entrypoint.sh);
    Triton's own chart (deploy/k8s-onprem) passes ``tritonserver`` and its flags as args."""
    container = of_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container
    assert container["args"][0] == "tritonserver"
    assert all(arg.startswith("--") for arg in container["args"][1:])


def test_the_hpa_alone_sets_the_replica_count():
    """A Deployment with spec.replicas is scaled back to it by every `kubectl apply`, whatever the HPA chose
    (Kubernetes docs: "Migrating Deployments and StatefulSets to horizontal autoscaling")."""
    deployment, hpa = of_kind("Deployment"), of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"}
    assert deployment["metadata"]["name"] == hpa["spec"]["scaleTargetRef"]["name"]
    assert "replicas" not in deployment["spec"]


def test_readme_says_what_the_startup_probe_covers():
    """Probes start once the container runs, after the image pull: the startup probe's budget is for model loading."""
    probe = of_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    budget_minutes = probe["periodSeconds"] * probe["failureThreshold"] / 60
    text = " ".join((DEPLOY / "README.md").read_text().split())
    claims = re.findall(r"[^.]*startup probe[^.]*\.", text, flags=re.IGNORECASE)
    assert claims, "the README should say what the startup probe allows"
    for claim in claims:
        assert not re.search(r"pull", claim, flags=re.IGNORECASE) or re.search(r"after|not", claim), claim
        for minutes in re.findall(r"(\d+) minutes", claim):
            assert float(minutes) == budget_minutes, claim
    assert re.search(r"probes start (only )?(once|after) the (image|container)", text, flags=re.IGNORECASE)


# ------------------------------------------------------------------------ rules


def rule_file(doc: dict, tmp_path: Path) -> Path:
    path = tmp_path / f"{doc['metadata']['name']}.rules.yml"
    path.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}, sort_keys=False))
    return path


def test_prometheusrule_groups_pass_promtool(tmp_path):
    promtool = require_tool("promtool", "sudo apt-get install prometheus  (brings promtool)")
    rules = of_kind("PrometheusRule")
    out = subprocess.run([promtool, "check", "rules", str(rule_file(rules, tmp_path))], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    count = sum(len(group["rules"]) for group in rules["spec"]["groups"])
    assert count >= 8 and f"SUCCESS: {count} rules found" in out.stdout + out.stderr


RULE_TESTS = DEPLOY / "tests" / "prometheusrule_test.yml"


def promtool_test(rules: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """`promtool test rules` of RULE_TESTS against the groups of ``rules`` (a PrometheusRule)."""
    promtool = require_tool("promtool", "sudo apt-get install prometheus  (brings promtool)")
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["rule_files"] = [str(rule_file(rules, tmp_path))]
    path = tmp_path / RULE_TESTS.name
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    return subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)


def test_prometheusrule_alerts_pass_their_unit_tests(tmp_path):
    out = promtool_test(of_kind("PrometheusRule"), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {c["alertname"] for t in cases for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
    quiet = {c["alertname"] for t in cases for c in t.get("alert_rule_test", []) if not c.get("exp_alerts")}
    alerts = {r["alert"] for g in of_kind("PrometheusRule")["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == tested and "TritonModelErrorRatioHigh" in quiet  # each fires once, and low traffic stays quiet


def test_error_ratio_alert_needs_traffic(tmp_path):
    """Without its traffic floor the alert would fire on one failed request in five minutes: the unit test says so."""
    rules = copy.deepcopy(of_kind("PrometheusRule"))
    alert = next(
        r for g in rules["spec"]["groups"] for r in g["rules"] if r.get("alert") == "TritonModelErrorRatioHigh"
    )
    assert "namespace:demo_requests:rate5m > 0.1" in alert["expr"]
    alert["expr"] = "namespace:demo_requests:error_ratio_rate5m > 0.05"  # the old rule
    out = promtool_test(rules, tmp_path)
    assert out.returncode != 0 and "TritonModelErrorRatioHigh" in out.stdout + out.stderr


def recording_name_parts(rule: dict) -> tuple[list[str], str, str, list[str], set[str]]:
    """(level labels, metric, operations, the labels the expression keeps, the series it reads) of a recording rule."""
    level, metric, operations = rule["record"].split(":")
    kept = {
        tuple(sorted(set(re.split(r"\s*,\s*", by.strip())) - {"le"}))
        for by in re.findall(r"by \(([^)]*)\)", rule["expr"])
    }
    assert len(kept) == 1, f"{rule['record']}: every aggregation should keep the same labels: {kept}"
    series = set(re.findall(r"\b([a-z_][a-z0-9_]*)(?:\{[^}]*\})?\[", rule["expr"]))
    return level.split("_"), metric, operations, list(kept.pop()), series


def test_recording_rule_names_are_level_metric_operations():
    """level:metric:operations (prometheus.io/docs/practices/rules): level = the labels kept, metric = a series read
    (_total dropped after rate(), _bucket after histogram_quantile), operations = the range and what was applied."""
    rules = [r for g in of_kind("PrometheusRule")["spec"]["groups"] for r in g["rules"] if "record" in r]
    assert rules
    for rule in rules:
        level, metric, operations, kept, series = recording_name_parts(rule)
        assert "_".join(level) == "_".join(kept), f"{rule['record']}: level should be {'_'.join(kept)}"
        assert metric in {re.sub(r"_(total|bucket)$", "", s) for s in series} | series, f"{rule['record']}: {series}"
        for window in re.findall(r"\[(\w+)\]", rule["expr"]):
            assert operations.endswith(f"rate{window}"), f"{rule['record']}: operations should end in rate{window}"


def test_the_name_check_catches_the_old_names():
    for old, expr in (
        ("pod:demo_requests:rate1m", "sum by (namespace, pod) (rate(demo_requests_total[1m]))"),
        ("pod:demo_busy_instances:rate1m", "sum by (namespace, pod) (rate(demo_request_duration_seconds_sum[1m]))"),
    ):
        level, metric, _, kept, series = recording_name_parts({"record": old, "expr": expr})
        assert "_".join(level) != "_".join(kept) or metric not in series


def test_promtool_rejects_a_broken_rule(tmp_path):
    promtool = require_tool("promtool", "sudo apt-get install prometheus  (brings promtool)")
    rules = copy.deepcopy(of_kind("PrometheusRule"))
    rules["spec"]["groups"][0]["rules"][0]["expr"] = "sum by (pod) (rate(demo_requests_total[1m])"
    out = subprocess.run([promtool, "check", "rules", str(rule_file(rules, tmp_path))], capture_output=True, text=True)
    assert out.returncode != 0


# --------------------------------------------------------------- HPA <-> adapter


def adapter_rules() -> list[dict]:
    values = yaml.safe_load((DEPLOY / "helm" / "prometheus-adapter-values.yaml").read_text())
    assert values["rules"]["default"] is False
    return values["rules"]["custom"]


def test_every_hpa_metric_is_served_by_one_adapter_rule():
    hpa = of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == of_kind("Deployment")["metadata"]["name"]
    served = {}
    for rule in adapter_rules():
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
        assert re.fullmatch(rule["name"]["matches"], series)
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        assert re.findall(r"<<\.(\w+)>>", rule["metricsQuery"]) == ["Series", "LabelMatchers", "GroupBy"]
        served[rule["name"]["as"]] = rule
    wanted = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert wanted and set(wanted) <= set(served)


# ---------------------------------------------------------- the model ConfigMap


def test_model_configmap_is_the_reference_model():
    out = subprocess.run(
        [sys.executable, str(DEPLOY / "render_model_configmap.py"), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    data = model_configmap()["data"]
    model = paths.MODEL_REPOSITORY / "metrics_demo"
    assert data["config.pbtxt"] == (model / "config.pbtxt").read_text()
    assert data["model.py"] == (model / "1" / "model.py").read_text()


def configmap_volume(mount: Path, data: dict[str, str], items: list[dict]) -> None:
    """Lay out ``mount`` as the kubelet does for a ConfigMap volume: a timestamped folder, ``..data``
    pointing at it, and one link per top-level item (what Triton then sees)."""
    stamp = mount / "..2026_01_01_00_00_00.000000001"
    for item in items:
        target = stamp / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[item["key"]])
    os.symlink(stamp.name, mount / "..data")
    for top in {item["path"].split("/")[0] for item in items}:
        os.symlink(f"..data/{top}", mount / top)


def deployment_volume() -> tuple[str, list[dict], str]:
    """(mountPath, ConfigMap items, model repository flag value) of the Deployment."""
    spec = of_kind("Deployment")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    configmap = next(v for v in spec["volumes"] if "configMap" in v)
    assert configmap["configMap"]["name"] == MODEL_CONFIGMAP
    mount = next(m for m in container["volumeMounts"] if m["name"] == configmap["name"])
    repo = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--model-repository="))
    return mount["mountPath"], configmap["configMap"]["items"], repo


@pytest.mark.integration
def test_configmap_mounted_as_the_deployment_says_loads_in_triton():
    mount_path, items, repo_flag = deployment_volume()
    relative = Path(mount_path).relative_to(repo_flag)  # metrics_demo
    repo = paths.scratch("test-k8s") / "models"
    (repo / relative).mkdir(parents=True)
    configmap_volume(repo / relative, model_configmap()["data"], items)
    with triton.start(repo) as server:
        index = requests.post(f"{server.http_url}/v2/repository/index", json={}, timeout=10).json()
        assert index == [{"name": "metrics_demo", "version": "1", "state": "READY"}]
        frame = scrape.scrape(server.metrics_url)
        assert not scrape.select(frame, "demo_requests_total", outcome="success").empty


@pytest.mark.integration
def test_configmap_mounted_as_the_whole_repository_fails():
    """Why the Deployment mounts the ConfigMap at the model's folder: at the repository root Triton exits."""
    _, items, _ = deployment_volume()
    repo = paths.scratch("test-k8s") / "models"
    repo.mkdir()
    rooted = [{"key": i["key"], "path": f"metrics_demo/{i['path']}"} for i in items]
    configmap_volume(repo, model_configmap()["data"], rooted)
    with pytest.raises(triton.TritonStartError, match=r"failed to load model '\.\.data'"):
        triton.start(repo, timeout=60)


# ------------------------------------------------------- the Grafana dashboard ConfigMap

KUBE_PROMETHEUS_STACK = {  # its chart's values.yaml: grafana.sidecar.dashboards.label/labelValue, datasources.uid
    "dashboard label": ("grafana_dashboard", "1"),
    "datasource uid": "prometheus",
}
ANNOTATION_LIMIT = 256 * 1024  # bytes of all annotations of an object; `kubectl apply` stores the object in one


def test_dashboard_configmap_is_the_compose_dashboard():
    out = subprocess.run(
        [sys.executable, str(DEPLOY / "render_dashboard_configmap.py"), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    configmap = of_kind("ConfigMap", DASHBOARD_CONFIGMAP)
    files = sorted((paths.ROOT / "docker" / "grafana" / "dashboards").glob("*.json"))
    assert files and sorted(configmap["data"]) == [f.name for f in files]
    for path in files:
        assert configmap["data"][path.name] == path.read_text(), f"{path.name} differs from the Compose file"
        json.loads(configmap["data"][path.name])
    label, value = KUBE_PROMETHEUS_STACK["dashboard label"]
    assert configmap["metadata"]["labels"][label] == value
    assert len((DEPLOY / "grafana-dashboard.yaml").read_bytes()) < ANNOTATION_LIMIT, "too big for `kubectl apply`"


@pytest.mark.parametrize("name", sorted(of_kind("ConfigMap", DASHBOARD_CONFIGMAP)["data"]))
def test_dashboard_defaults_fit_kube_prometheus_stack(name):
    """The datasource variable defaults to the chart's datasource uid, and the job variable lists jobs, so the
    operator's <namespace>/<PodMonitor> job (triton/triton) is offered."""
    board = json.loads(of_kind("ConfigMap", DASHBOARD_CONFIGMAP)["data"][name])
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == KUBE_PROMETHEUS_STACK["datasource uid"]
    assert re.fullmatch(r"label_values\(\w+, job\)", variables["job"]["query"]["query"])
    podmonitor = of_kind("PodMonitor")
    assert "jobLabel" not in podmonitor["spec"]  # so the operator's default job label applies: <namespace>/<name>


def test_readme_points_at_the_files():
    text = (DEPLOY / "README.md").read_text()
    for name in [*yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"], "helm/"]:
        assert name in text, f"deploy/kubernetes/README.md does not mention {name}"
