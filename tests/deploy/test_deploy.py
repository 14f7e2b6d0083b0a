"""Static checks of the deployment files: Helm chart, kustomize manifests, Dockerfiles.

No Kubernetes API server or Docker engine runs here, so the files are checked
the way a cluster would first see them: ``helm lint --strict``, the rendered
YAML against the Kubernetes OpenAPI schemas (``kubernetes-validate --strict``),
the KServe InferenceService (a CRD without a bundled schema) field by field and
its predictor against the core PodSpec schema, and ``checkov`` on everything.
``make tools`` puts helm, kubectl (kustomize) and checkov in ``.venv-tools/bin``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rsnflow import __version__

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "rsnflow"
MANIFESTS = ROOT / "manifests"
IMAGES = ROOT / "images"
NAMESPACE = "rsnflow"

#: Value sets the chart must render and pass every check with.
VARIANTS: dict[str, list[str]] = {
    "defaults": [],
    "own-minio-and-secret": ["minio.deploy=true", "s3.existingSecret=", "s3.accessKey=AK", "s3.secretKey=SK"],
    "postgresql-gpu": [
        "mlflow.backendStore.type=postgresql",
        "mlflow.backendStore.postgresql.existingSecret=mlflow-db",
        "serving.gpu.enabled=true",
        "serving.nodeSelector.accelerator=nvidia-h100",
        "serving.tolerations[0].key=nvidia.com/gpu",
        "serving.tolerations[0].operator=Exists",
        "serving.tolerations[0].effect=NoSchedule",
        "image.serve.digest=sha256:" + "0" * 64,
    ],
}


def _tool(name: str) -> str:
    where = Path(os.environ.get("RSNFLOW_TOOLS_BIN", ROOT / ".venv-tools" / "bin")) / name
    if not where.exists():
        pytest.fail(f"{where} is missing: `make tools` installs helm, kubectl and checkov")
    return str(where)


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def _render(values: list[str], release: str = "rsn", tests: bool = True) -> str:
    cmd = [_tool("helm"), "template", release, str(CHART), "--namespace", NAMESPACE]
    if not tests:
        cmd.append("--skip-tests")  # the `helm test` pods are not part of a kustomize base
    for v in values:
        cmd += ["--set", v]
    done = _run(cmd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _validate(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    """kubernetes-validate --strict on every document it has a schema for."""
    path = tmp_path / "docs.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    exe = Path(sys.executable).with_name("kubernetes-validate")
    done = _run([str(exe), "--strict", "--quiet", str(path)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ERROR" not in done.stdout, done.stdout


def _predictor_as_pod(isvc: dict[str, Any]) -> dict[str, Any]:
    """The InferenceService predictor is a PodSpec plus KServe's scaling fields: check it as a Pod."""
    spec = {k: v for k, v in isvc["spec"]["predictor"].items() if k not in ("minReplicas", "maxReplicas")}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "predictor", "namespace": NAMESPACE},
        "spec": spec,
    }


def _check_inference_service(isvc: dict[str, Any], gpu: bool) -> None:
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["name"] == "rsn-classifier" and isvc["metadata"]["namespace"] == NAMESPACE
    pred = isvc["spec"]["predictor"]
    assert pred["minReplicas"] >= 1 and pred["maxReplicas"] >= pred["minReplicas"]
    (c,) = pred["containers"]
    assert c["name"] == "kserve-container"  # the name KServe routes to
    assert c["args"][0] == "models:/rsnflow-rsn-classifier@champion"
    assert "--host=0.0.0.0" in c["args"] and "--port=8080" in c["args"]
    assert f"--device={'cuda' if gpu else 'cpu'}" in c["args"]
    assert c["ports"][0]["containerPort"] == 8080
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"].endswith(f"-mlflow.{NAMESPACE}.svc.cluster.local:5000")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "secretKeyRef" in env[key]["valueFrom"] and "value" not in env[key]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pred["securityContext"]["runAsNonRoot"] is True and pred["securityContext"]["runAsUser"] >= 10000
    limits = c["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == gpu
    if gpu:
        assert pred["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_helm_lint_strict() -> None:
    for name, values in VARIANTS.items():
        cmd = [_tool("helm"), "lint", "--strict", str(CHART), "--namespace", NAMESPACE]
        for v in values:
            cmd += ["--set", v]
        done = _run(cmd)
        assert done.returncode == 0, (name, done.stdout, done.stderr)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rendered_chart_validates(variant: str, tmp_path: Path) -> None:
    docs = _docs(_render(VARIANTS[variant]))
    kinds = [d["kind"] for d in docs]
    assert {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "InferenceService"} <= set(
        kinds
    )
    assert all(d["metadata"].get("namespace") == NAMESPACE for d in docs)
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    _check_inference_service(isvc, gpu="gpu" in variant)
    if "digest" in " ".join(VARIANTS[variant]):
        assert "@sha256:" in isvc["spec"]["predictor"]["containers"][0]["image"]
    _validate([d for d in docs if d["kind"] != "InferenceService"] + [_predictor_as_pod(isvc)], tmp_path)

    # The pipeline's tasks read the endpoints and this release's MLflow from the ConfigMap the
    # pipeline's env_config_map parameter names (kfp_pipelines.rsn_pipeline.ENV_KEYS).
    from kfp_pipelines.rsn_pipeline import ENV_KEYS

    env_map = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rsnflow-pipeline-env"
    )
    assert set(env_map["data"]) == set(ENV_KEYS)
    assert (
        env_map["data"]["MLFLOW_TRACKING_URI"].startswith("http://")
        and ".svc.cluster.local:" in (env_map["data"]["MLFLOW_TRACKING_URI"])
    )

    mlflow = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-mlflow"))
    args = mlflow["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--serve-artifacts" in args and "--artifacts-destination=s3://mlflow/artifacts" in args
    env = {e["name"]: e for e in mlflow["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    if "postgresql" in variant:
        assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-db"
        assert "PersistentVolumeClaim" not in kinds
    else:
        assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "sqlite:////data/mlflow.db"
    if variant == "own-minio-and-secret":
        secret = next(d for d in docs if d["kind"] == "Secret")
        assert secret["stringData"] == {"accesskey": "AK", "secretkey": "SK"}
        assert any(d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-minio") for d in docs)
    else:
        assert "Secret" not in kinds  # credentials come from the existing Secret


def test_required_values_fail_with_a_clear_message() -> None:
    cmd = [_tool("helm"), "template", "rsn", str(CHART), "--set", "s3.existingSecret="]
    done = _run(cmd)
    assert done.returncode != 0 and "s3.accessKey is required" in done.stderr
    done = _run([*cmd[:4], "--set", "mlflow.backendStore.type=mysql"])
    assert done.returncode != 0 and "must be sqlite or postgresql" in done.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("serving.maxBatch=many", "serving.maxBatch: Invalid type. Expected: integer"),
        ("mlflow.port=0", "mlflow.port: Must be greater than or equal to 1"),
        ("s3.endpoint=minio:9000", "s3.endpoint: Does not match pattern"),
        ("serving.prot=1", "Additional property prot is not allowed"),
    ],
)
def test_the_schema_refuses_wrong_values_at_install(value: str, message: str) -> None:
    """values.schema.json: a typo or a wrong type fails `helm template`/`install`, naming the value."""
    done = _run([_tool("helm"), "template", "rsn", str(CHART), "--set", value])
    assert done.returncode != 0 and message in done.stderr, done.stderr


def test_helm_test_checks_mlflow_and_the_predictor() -> None:
    docs = [
        d for d in _docs(_render([])) if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    ]
    urls = sorted(d["spec"]["containers"][0]["args"][0].split('url = "')[1].split('"')[0] for d in docs)
    assert urls == [
        f"http://rsn-classifier-predictor.{NAMESPACE}.svc.cluster.local/v2/health/ready",
        f"http://rsn-rsnflow-mlflow.{NAMESPACE}.svc.cluster.local:5000/health",
    ]
    assert all(d["spec"]["securityContext"]["runAsNonRoot"] for d in docs)


def test_the_predictor_takes_the_champions_own_thresholds_unless_told() -> None:
    """By default the served champion abstains where its validation split says (no flag given)."""

    def args(values: list[str]) -> list[str]:
        isvc = next(d for d in _docs(_render(values)) if d["kind"] == "InferenceService")
        return [a for a in isvc["spec"]["predictor"]["containers"][0]["args"] if a.startswith("--a")]

    assert args([]) == []
    told = args(["serving.abstainBelow=0", "serving.atypicalBelow=0"])
    assert told == ["--abstain-below=0", "--atypical-below=0"]


def test_manifests_base_is_the_chart_rendered(tmp_path: Path) -> None:
    committed = (MANIFESTS / "base" / "rsnflow.yaml").read_text()
    assert committed == _render([], release="rsnflow", tests=False), (
        "manifests/base/rsnflow.yaml is stale: run `make manifests`"
    )


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_kustomize_overlays_build_and_validate(overlay: str, tmp_path: Path) -> None:
    done = _run([_tool("kubectl"), "kustomize", str(MANIFESTS / "overlays" / overlay)])
    assert done.returncode == 0, done.stderr
    docs = _docs(done.stdout)
    assert docs[0]["kind"] == "Namespace"
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    _check_inference_service(isvc, gpu=overlay == "gpu")
    _validate([d for d in docs if d["kind"] != "InferenceService"] + [_predictor_as_pod(isvc)], tmp_path)


def test_kustomize_images_reach_every_container(tmp_path: Path) -> None:
    """An overlay's ``images:`` points the MLflow Deployment and the InferenceService at a registry."""
    digest = "sha256:" + "a" * 64
    base = os.path.relpath(MANIFESTS / "overlays" / "cpu", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {base}\nimages:\n"
        "  - name: ghcr.io/rsnflow/rsnflow-serve\n    newName: registry.example.org/rsnflow-serve\n"
        f"    digest: {digest}\n"
        "  - name: ghcr.io/rsnflow/rsnflow-pipeline\n    newName: registry.example.org/rsnflow-pipeline\n"
        "    newTag: 0.2.0\n"
    )
    done = _run([_tool("kubectl"), "kustomize", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    docs = _docs(done.stdout)
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    assert (
        isvc["spec"]["predictor"]["containers"][0]["image"] == f"registry.example.org/rsnflow-serve@{digest}"
    )
    images = {
        c["image"]
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert "registry.example.org/rsnflow-pipeline:0.2.0" in images
    assert not any(i.startswith("ghcr.io/rsnflow/") for i in images)


def _checkov(target: Path, framework: str) -> dict[str, Any]:
    done = _run(
        [_tool("checkov"), "-d", str(target), "--framework", framework, "--skip-download", "-o", "json"],
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    out = done.stdout.strip()
    assert out, done.stderr[-3000:]
    report = json.loads(out)
    report = report[0] if isinstance(report, list) else report
    return report


@pytest.mark.slow
def test_checkov_passes_on_chart_manifests_and_dockerfiles(tmp_path: Path) -> None:
    rendered = tmp_path / "k8s"
    rendered.mkdir()
    for name, values in VARIANTS.items():
        (rendered / f"chart-{name}.yaml").write_text(_render(values))
    for overlay in ("cpu", "gpu"):
        done = _run([_tool("kubectl"), "kustomize", str(MANIFESTS / "overlays" / overlay)])
        (rendered / f"kustomize-{overlay}.yaml").write_text(done.stdout)
    for target, framework in ((rendered, "kubernetes"), (IMAGES, "dockerfile")):
        report = _checkov(target, framework)
        if "summary" not in report:  # checkov reports nothing when no check applied
            pytest.fail(f"checkov found nothing to check in {target}: {report}")
        failed = report["results"]["failed_checks"]
        assert report["summary"]["failed"] == 0, [(f["check_id"], f["resource"]) for f in failed]
        assert report["summary"]["passed"] > 50
        # every skip carries a reason
        skipped = report["results"]["skipped_checks"]
        assert len(skipped) == report["summary"]["skipped"]
        for s in skipped:
            assert len(s["check_result"]["suppress_comment"].strip()) > 20, s["check_id"]


def test_dockerfiles_pin_install_from_the_lock_and_run_as_non_root() -> None:
    files = sorted(IMAGES.glob("*.Dockerfile"))
    assert [f.name for f in files] == ["pipeline.Dockerfile", "serve.Dockerfile", "train.Dockerfile"]
    for f in files:
        text = f.read_text()
        (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), (f.name, base)
        assert "COPY requirements-runtime.lock images/install-runtime.sh" in text, f.name
        assert re.search(r"^RUN \./install-runtime\.sh (lock|\"\$\{TORCH\}\")$", text, flags=re.M), f.name
        assert "RUN ./install-runtime.sh project ." in text, f.name  # the project itself, nothing re-resolved
        (user,) = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
        assert int(user.split(":")[0]) >= 10000, (f.name, user)
        assert text.rstrip().splitlines()[-1].startswith(("CMD", "ENTRYPOINT")), f.name
        for line in re.findall(r"^(?:ENV|ARG)\b.*$", text, flags=re.M):
            assert not re.search(r"(KEY|SECRET|PASSWORD|TOKEN)\s*=", line, flags=re.I), (f.name, line)
    serve = (IMAGES / "serve.Dockerfile").read_text()
    assert 'ENTRYPOINT ["rsnflow", "serve"]' in serve and "HEALTHCHECK" in serve
    assert '"--host", "127.0.0.1"' in serve  # loopback unless the pod spec says otherwise


def test_images_and_chart_agree_with_the_package_version() -> None:
    from kfp_pipelines.images import PIPELINE_IMAGE, TRAIN_IMAGE

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert values["image"]["pipeline"]["tag"] == values["image"]["serve"]["tag"] == __version__
    registry = values["image"]["registry"]
    if "RSNFLOW_PIPELINE_IMAGE" not in os.environ:
        assert f"{registry}/{values['image']['pipeline']['repository']}:{__version__}" == PIPELINE_IMAGE
    if "RSNFLOW_TRAIN_IMAGE" not in os.environ:
        assert f"{registry}/rsnflow-train:{__version__}" == TRAIN_IMAGE
    for secret_like in ("accessKey", "secretKey"):
        assert values["s3"][secret_like] == ""  # no credential ships in the chart


def test_the_mlflow_pod_creates_its_artifact_bucket(tmp_path: Path) -> None:
    """The rendered init container's own command, run against a real S3 server: created, then kept."""
    from rsnflow.storage import ObjectStore
    from servers import seaweedfs

    (deployment,) = [
        d
        for d in _docs(_render([], tests=False))
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("mlflow")
    ]
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert {e["name"] for e in init["env"]} >= {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "RSNFLOW_S3_ENDPOINT",
    }
    argv = [sys.executable, *init["command"][1:], *init["args"]]  # the image's python is this venv's
    with seaweedfs(tmp_path / "weed", buckets=()) as s3:
        env = {**os.environ, **s3}
        first = _run(argv, env=env)
        assert first.returncode == 0 and first.stdout.strip() == "s3://mlflow: created", first.stderr
        again = _run(argv, env=env)
        assert again.stdout.strip() == "s3://mlflow: exists"
        assert ObjectStore.from_env(s3).client.bucket_exists("mlflow")
        refused = _run(argv, env={**env, "AWS_SECRET_ACCESS_KEY": "wrong"})
        assert refused.returncode != 0 and "StorageError" in refused.stderr
