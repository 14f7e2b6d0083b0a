"""Rolling the InferenceService to a new champion: the patch, and no patch outside a cluster."""

from __future__ import annotations

import pytest

from rsnflow.serve.rollout import ANNOTATION, roll_inference_service, rollout_patch


def test_the_patch_starts_a_new_predictor_revision() -> None:
    assert rollout_patch("7") == {"spec": {"predictor": {"annotations": {ANNOTATION: "7"}}}}


def test_a_local_run_rolls_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert "not in a cluster" in roll_inference_service("rsn-classifier", None, "7")
    assert "not rolled" in roll_inference_service("", None, "7")


def test_in_a_cluster_the_named_service_is_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    """The call the chart's Role allows (get/patch on its InferenceService), with the API client faked."""
    from kubernetes import client, config

    calls = []

    class Api:
        def patch_namespaced_custom_object(self, *args: object) -> None:
            calls.append(args)

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setattr(config, "load_incluster_config", lambda: None)
    monkeypatch.setattr(client, "CustomObjectsApi", Api)
    message = roll_inference_service("rsn-classifier", "rsnflow", "7")
    assert calls == [
        ("serving.kserve.io", "v1beta1", "rsnflow", "inferenceservices", "rsn-classifier", rollout_patch("7"))
    ]
    assert message == "InferenceService rsnflow/rsn-classifier rolled to champion version 7"
