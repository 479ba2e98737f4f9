"""The Kubernetes manifests validate against the Kubernetes API's own schemas (strict: unknown
fields refused), and the replicas point at the shared store the manifests ship."""

from __future__ import annotations

import copy
from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from engine.cli import serve

KUBERNETES = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
VERSION = "1.30.0"  # the oldest release the manifests promise to run on


def documents() -> list[dict]:
    return [
        d
        for path in sorted(KUBERNETES.glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d
    ]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_is_a_valid_kubernetes_object(doc: dict) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_validator_refuses_what_kubernetes_would() -> None:
    """Not a YAML check: a misspelt field and a wrong type are refused."""
    deployment = next(d for d in documents() if d["kind"] == "Deployment")
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["replica"] = misspelt["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, VERSION, strict=True)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, VERSION, strict=True)


def test_replicas_share_the_shipped_redis() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in documents()}
    deployment = docs[("Deployment", "reachrank")]
    assert deployment["spec"]["replicas"] >= 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    options = serve.make_context("serve", container["args"][1:]).params
    store = urlparse(options["state_store"])
    assert store.scheme == "redis" and options["feedback_dir"] is not None
    service = docs[("Service", store.hostname)]
    assert store.port in [p["port"] for p in service["spec"]["ports"]]
    redis = docs[("Deployment", store.hostname)]
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    mounts = {m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert mounts <= volumes
