"""Roll the KServe InferenceService to a new champion after the registry alias moved.

The predictor resolves ``models:/NAME@champion`` when it starts, so a new alias
reaches the served model only with a new revision. Patching an annotation of
the predictor's pod template is what ``kubectl rollout restart`` does: KServe
makes a new revision, whose pods load the new champion, and retires the old
one once the new is ready. The chart's Role allows exactly ``get`` and
``patch`` on its InferenceService for the pipeline's service account.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rsnflow.log import get_logger

__all__ = ["ANNOTATION", "roll_inference_service", "rollout_patch"]

log = get_logger(__name__)

#: The predictor pod template's annotation that names the champion version it serves.
ANNOTATION = "rsnflow.io/champion-version"


def rollout_patch(version: str) -> dict[str, Any]:
    """The merge patch that starts a new predictor revision for ``version``.

    Parameters
    ----------
    version : str
        The registered model version the alias now points at.

    Returns
    -------
    dict
        A JSON merge patch of the InferenceService.
    """
    return {"spec": {"predictor": {"annotations": {ANNOTATION: str(version)}}}}


def roll_inference_service(name: str, namespace: str | None, version: str) -> str:
    """Patch the InferenceService ``name`` so that it serves ``version``; a message says what happened.

    Outside a cluster (no ``KUBERNETES_SERVICE_HOST``: a local run) or with an
    empty ``name`` nothing is patched.

    Parameters
    ----------
    name : str
        The InferenceService (the chart's ``serving.name``); empty: do not roll.
    namespace : str or None
        Its namespace; None: the pod's own (the service account's namespace file).
    version : str
        The champion's registered version.

    Returns
    -------
    str
        What was done, for the task's output.

    Raises
    ------
    kubernetes.client.exceptions.ApiException
        The API refused the patch (the service missing, or RBAC).
    """
    if not name:
        return "no InferenceService named: not rolled"
    if "KUBERNETES_SERVICE_HOST" not in os.environ:
        return f"not in a cluster: InferenceService {name} not rolled"
    from kubernetes import client, config

    config.load_incluster_config()
    if namespace is None:
        namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
    client.CustomObjectsApi().patch_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", name, rollout_patch(version)
    )
    log.info("rolled InferenceService %s/%s to champion version %s", namespace, name, version)
    return f"InferenceService {namespace}/{name} rolled to champion version {version}"
