"""The Kubernetes manifests: each overlay rendered with `kubectl kustomize` and every object
validated against the Kubernetes API's schemas (kubernetes-validate, strict: an unknown field is
an error), then the properties an operator relies on: probes apart, resources, the autoscaled
workers' grace on SIGTERM, disruption budgets, secrets referenced and never written here."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
KUBERNETES_VERSION = "1.32.0"


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "make test installs it: python -m devstack.system kubernetes-client"
    rendered = subprocess.run(
        [kubectl, "kustomize", str(OVERLAYS / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [document for document in yaml.safe_load_all(rendered) if document]


def by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_every_object_is_valid_kubernetes(overlay: str) -> None:
    objects = render(overlay)
    assert len(objects) == 8
    for manifest in objects:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    # The validator does refuse what the API server would.
    broken = by_kind(objects)[("Deployment", "mailing-worker")]
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_what_an_operator_relies_on() -> None:
    objects = by_kind(render("production"))
    for name, port in (("mailing-api", "http"), ("mailing-worker", "metrics")):
        deployment = objects[("Deployment", name)]
        assert deployment["metadata"]["namespace"] == "mailing"
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "registry.example.com/mailing-service:1.0.0"
        # Liveness asks nothing of PostgreSQL or Temporal; readiness does.
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": port}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert container["resources"]["requests"] and container["resources"]["limits"]
        sources = [next(iter(source.values()))["name"] for source in container["envFrom"]]
        assert sources == ["mailing-config", "mailing-secrets"]
        budget = objects[("PodDisruptionBudget", name)]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    worker = objects[("Deployment", "mailing-worker")]["spec"]["template"]["spec"]
    config = objects[("ConfigMap", "mailing-config")]["data"]
    # Kubernetes' grace outlasts the worker's own, so that SIGKILL never cuts a send.
    assert worker["terminationGracePeriodSeconds"] > float(config["WORKER_SHUTDOWN_SECONDS"])
    scaler = objects[("HorizontalPodAutoscaler", "mailing-worker")]["spec"]
    assert scaler["scaleTargetRef"]["name"] == "mailing-worker"
    assert (scaler["minReplicas"], scaler["maxReplicas"]) == (3, 20)
    assert objects[("Deployment", "mailing-api")]["spec"]["replicas"] == 3
    job = objects[("Job", "mailing-migrate")]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["alembic", "upgrade", "head"]
    # No Secret is written in the manifests; no secret value in the ConfigMap.
    assert not any(kind == "Secret" for kind, _ in objects)
    assert not any(word in key for key in config for word in ("TOKEN", "PASSWORD", "KEY"))


def test_the_temporal_helm_values_use_postgresql() -> None:
    values = yaml.safe_load((ROOT / "deploy" / "temporal" / "values.yaml").read_text())
    persistence = values["server"]["config"]["persistence"]
    for store in ("default", "visibility"):
        assert persistence[store]["driver"] == "sql"
        assert persistence[store]["sql"]["driver"] == "postgres12"
    assert values["cassandra"]["enabled"] is False
    assert values["elasticsearch"]["enabled"] is False
