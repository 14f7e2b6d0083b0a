"""MLflow tracking and registry, behind a small interface.

The tracking URI comes from the configuration (``tracking.uri``) or, when it is
null, is a local SQLite store beside the models (``sqlite:///DIR/mlflow.db``,
artifacts in ``DIR/mlartifacts``). In a cluster it is the URL of the MLflow
server of the Helm chart; credentials for an S3 artifact store come from the
environment (``AWS_ACCESS_KEY_ID``, ``MLFLOW_S3_ENDPOINT_URL``), never from here.
The registry uses aliases (``champion``), not the deprecated stages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rsnflow.config import TrackingConfig
from rsnflow.log import get_logger

__all__ = ["CHAMPION", "Tracker", "resolve_uri"]

log = get_logger(__name__)

CHAMPION = "champion"


def resolve_uri(config: TrackingConfig, local_dir: str | Path) -> str:
    """The tracking URI: ``tracking.uri`` (``--tracking-uri``), ``MLFLOW_TRACKING_URI``, or local SQLite."""
    uri = config.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    d = Path(local_dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'mlflow.db'}"


class Tracker:
    """One MLflow experiment at one tracking URI."""

    def __init__(self, uri: str, experiment: str, registered_model: str) -> None:
        import mlflow

        self.uri = uri
        self.registered_model = registered_model
        mlflow.set_tracking_uri(uri)
        self.client = mlflow.MlflowClient(uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = None
            if uri.startswith("sqlite:///"):
                # A SQLite store would otherwise put artifacts under ./mlruns of the caller's cwd.
                location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
            exp_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id

    @contextmanager
    def run(self, name: str, tags: dict[str, str] | None = None) -> Iterator[str]:
        """Start a run; yields its id."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=name, tags=tags) as active:
            yield active.info.run_id

    @staticmethod
    def log_params(params: dict[str, Any]) -> None:
        import mlflow

        mlflow.log_params(
            {k: (str(v) if isinstance(v, list | tuple | dict) else v) for k, v in params.items()}
        )

    @staticmethod
    def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    @staticmethod
    def log_artifacts(paths: list[Path], folder: str | None = None) -> None:
        import mlflow

        for p in paths:
            mlflow.log_artifact(str(p), artifact_path=folder)

    def log_model(self, model: Any, example: Any) -> str:
        """Log a torch model with signature and input example; register it; return the version.

        The model is exported (pt2), which keeps no Python attributes: its
        ``header()`` (architecture, class labels, input shape) goes into the
        MLflow model's metadata, where the predictor reads the labels.
        """
        import mlflow
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        model = model.cpu().eval()
        with torch.no_grad():
            output = model(torch.as_tensor(example)).numpy()
        signature = infer_signature(np.asarray(example), output)
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=np.asarray(example),
            registered_model_name=self.registered_model,
            metadata=model.header() if hasattr(model, "header") else None,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy", "rsnflow"],
        )
        version = str(info.registered_model_version)
        log.info("registered %s version %s", self.registered_model, version)
        return version

    def set_champion(self, version: str) -> None:
        self.client.set_registered_model_alias(self.registered_model, CHAMPION, version)
        log.info("alias %s -> %s version %s", CHAMPION, self.registered_model, version)
