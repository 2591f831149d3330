"""The Kubernetes manifests, rendered with `kubectl kustomize` and validated offline against the
Kubernetes JSON schemas (kubernetes-validate, strict), then checked for what the deployment promises."""
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir())
KUBERNETES_VERSION = "1.31.0"


def render(folder: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: `make test` installs Debian's kubectl package (apt-get install kubectl)")
    out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def pod_specs(docs: list[dict]) -> list[dict]:
    specs = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]
    return specs + [d["spec"]["jobTemplate"]["spec"]["template"]["spec"] for d in by_kind(docs, "CronJob")]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schema(overlay):
    docs = render(K8S / "overlays" / overlay)
    assert len(docs) > 15
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)   # raises on any unknown or wrong field


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nothing_is_exposed_and_traffic_is_denied_by_default(overlay):
    docs = render(K8S / "overlays" / overlay)
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in by_kind(docs, "Service"))
    assert not by_kind(docs, "Ingress")
    deny = by_kind(docs, "NetworkPolicy", "default-deny")[0]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    postgres_from = by_kind(docs, "NetworkPolicy", "postgres-ingress")[0]["spec"]["ingress"][0]["from"]
    assert {"app.kubernetes.io/name": "mlflow"} in [f["podSelector"]["matchLabels"] for f in postgres_from]
    for spec in pod_specs(docs):                      # the namespace enforces the restricted pod-security profile
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["seccompProfile"]
        for c in spec["containers"] + spec.get("initContainers", []):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["limits"] and c["resources"]["requests"]
    assert not any("password" in str(s.get("stringData", s.get("data", ""))).lower() for s in by_kind(docs, "Secret"))


def test_mlflow_runs_basic_auth_on_postgres_and_s3():
    docs = render(K8S / "overlays" / "self-hosted-gpu")
    spec = by_kind(docs, "Deployment", "mlflow")[0]["spec"]["template"]["spec"]
    command = spec["containers"][0]["command"]
    assert command[:4] == ["mlflow", "server", "--app-name", "basic-auth"] and "--serve-artifacts" in command
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-store"
    assert spec["initContainers"][0]["name"] == "check-secrets"


@pytest.mark.parametrize("password, ok", [("password1234", False), ("short-pass", False), ("", False),
                                          ("a-long-and-random-admin-secret", True)])
def test_mlflow_refuses_to_start_with_the_default_password(tmp_path, password, ok):
    docs = render(K8S / "base")
    script = by_kind(docs, "ConfigMap", "mlflow-check-secrets")[0]["data"]["check-secrets.sh"]
    auth = tmp_path / "auth"
    auth.mkdir()
    script = script.replace("/auth/", f"{auth}/")
    run = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                         env={"MLFLOW_ADMIN_PASSWORD": password, "MLFLOW_AUTH_DATABASE_URI": "postgresql://db/auth",
                              "PATH": "/usr/bin:/bin"})
    assert (run.returncode == 0) == ok, run.stderr
    if ok:
        ini = (auth / "basic_auth.ini").read_text()
        assert "admin_password = a-long-and-random-admin-secret" in ini and "database_uri = postgresql://db/auth" in ini
    else:
        assert "admin-password" in run.stderr


def test_serving_runs_on_gpu_nodes_with_probes_draining_and_autoscaling():
    docs = render(K8S / "overlays" / "self-hosted-gpu")
    deployment = by_kind(docs, "Deployment", "yanjin-serving")[0]
    spec = deployment["spec"]["template"]["spec"]
    serving = spec["containers"][0]
    assert serving["image"].endswith("yanjin-gpu:0.1.0")
    assert serving["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert serving["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert serving["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert spec["terminationGracePeriodSeconds"] >= 30 and serving["lifecycle"]["preStop"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = by_kind(docs, "HorizontalPodAutoscaler", "yanjin-serving")[0]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "yanjin-serving" and hpa["metrics"][0]["resource"]["name"] == "cpu"
    cpu = by_kind(render(K8S / "overlays" / "cpu-dev"), "Deployment", "yanjin-serving")[0]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"] and "nodeSelector" not in cpu


def test_the_drift_check_runs_hourly_one_at_a_time():
    cron = by_kind(render(K8S / "base"), "CronJob", "yanjin-drift-check")[0]["spec"]
    assert len(cron["schedule"].split()) == 5 and cron["concurrencyPolicy"] == "Forbid"   # Kubernetes cron: 5 fields
    command = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["yanjin", "monitor", "check"]


def secret_refs(container: dict) -> dict[str, tuple[str, str]]:
    """env name -> (Secret, key) for every variable a container takes from a Secret."""
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_runs_with_least_privilege(overlay):
    """Serving reads MLflow as the read-only user and logs as the prediction-log role; only MLflow and the
    grants Job ever see the MLflow admin password; every call to the server needs a key."""
    docs = render(K8S / "overlays" / overlay)
    serving = by_kind(docs, "Deployment", "yanjin-serving")[0]["spec"]["template"]["spec"]
    refs = secret_refs(serving["containers"][0])
    assert refs["MLFLOW_TRACKING_USERNAME"] == ("yanjin-serving", "mlflow-username")
    assert refs["MLFLOW_TRACKING_PASSWORD"] == ("yanjin-serving", "mlflow-password")
    assert refs["YANJIN_PREDICTION_LOG"] == ("yanjin-serving", "prediction-log-url")
    command = serving["containers"][0]["command"]
    assert "open_predict=false" in command and "api_keys=/etc/yanjin/api-keys.json" in command
    assert "require_log=true" in command
    for d in docs:   # no database URL (a password in it) on any command line: from a Secret, in the environment
        for spec in pod_specs([d]):
            for c in spec["containers"] + spec.get("initContainers", []):
                assert "--prediction-log" not in c.get("command", []) + c.get("args", []), d["metadata"]["name"]
    assert {"name": "api-keys", "secret": {"secretName": "yanjin-api-keys", "defaultMode": 0o440}} in serving["volumes"]
    drift = by_kind(docs, "CronJob", "yanjin-drift-check")[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert secret_refs(drift["containers"][0])["YANJIN_PREDICTION_LOG"] == ("yanjin-predlog-reader", "url")
    purge = by_kind(docs, "CronJob", "yanjin-log-purge")[0]
    container = purge["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:4] == ["yanjin", "log", "purge", "--older-than"]
    assert secret_refs(container)["YANJIN_PREDICTION_LOG"] == ("yanjin-retention", "prediction-log-url")
    admins = {d["metadata"]["name"] for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob")
              for spec in pod_specs([d]) for c in spec["containers"] + spec.get("initContainers", [])
              if ("mlflow-auth", "admin-password") in secret_refs(c).values()}
    assert admins == {"mlflow", "yanjin-grants"}
    grants = by_kind(docs, "ConfigMap", "yanjin-grants")[0]["data"]
    assert "ALTER DATABASE predictions OWNER TO yanjin_predlog_owner" in grants["predlog-roles.sql"]
    assert "REVOKE ALL ON DATABASE mlflow FROM PUBLIC" in grants["predlog-roles.sql"]


def test_the_pipeline_steps_may_create_and_follow_trainer_jobs_and_nothing_more():
    docs = [d for d in yaml.safe_load_all((K8S / "kubeflow" / "trainer-rbac.yaml").read_text()) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    from yanjin.components.trainjob import API_GROUP, PLURAL

    rules = by_kind(docs, "Role", "yanjin-trainjobs")[0]["rules"]
    granted = {(g, r): set(rule["verbs"]) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted[(API_GROUP, PLURAL)] == {"create", "get", "list", "watch"}     # never delete or patch
    assert granted[("", "pods/log")] == {"get"} and granted[("", "pods")] == {"get", "list"}
    assert "secrets" not in {r for _, r in granted}


def test_the_release_controller_runs_itself_with_the_release_principal():
    """One replica of `yanjin controller run` (Recreate: never two leaders from a rolling update), the release
    principal's MLflow user and the ledger's URL from a Secret, nothing exposed."""
    [deployment] = by_kind(render(K8S / "base"), "Deployment", "yanjin-release-controller")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    assert container["command"][:3] == ["yanjin", "controller", "run"] and "ports" not in container
    secrets_ = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert secrets_["YANJIN_LEDGER_URL"] == secrets_["MLFLOW_TRACKING_USERNAME"] == "yanjin-release"
    assert pod["securityContext"]["runAsNonRoot"] and not pod["automountServiceAccountToken"]
