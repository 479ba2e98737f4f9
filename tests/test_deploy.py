"""The shipped Kubernetes manifests parse and ask the server for what it really offers."""

from __future__ import annotations

from pathlib import Path

import yaml

from engine.cli import serve
from engine.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _documents() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_manifests_are_consistent() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _documents()}
    deployment = docs[("Deployment", "reachrank")]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # The container's arguments are real `reachrank serve` options.
    context = serve.make_context("serve", container["args"][1:])
    assert context.params["port"] == 50051 and context.params["host"] == "0.0.0.0"
    # Readiness uses the gRPC health service on the serving port.
    assert container["readinessProbe"]["grpc"]["port"] == context.params["port"]
    # Every setting in the ConfigMap is a real field.
    settings = docs[("ConfigMap", "reachrank-settings")]["data"]
    fields = {f"REACHRANK_{name.upper()}" for name in Settings.model_fields}
    assert {k for k in settings if k.startswith("REACHRANK_")} <= fields
    # The headless service selects the deployment's pods for client-side balancing.
    headless = docs[("Service", "reachrank-headless")]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert pod["terminationGracePeriodSeconds"] > float(settings["REACHRANK_GRACE_PERIOD_S"])
