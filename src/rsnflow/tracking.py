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
#: MLflow 3's experiment type: with it the UI opens the experiment on its runs (model
#: training), not on the empty GenAI traces page it shows for an experiment without it.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def resolve_uri(config: TrackingConfig, local_dir: str | Path) -> str:
    """The tracking URI: ``tracking.uri`` (``--tracking-uri``), ``MLFLOW_TRACKING_URI``, or local SQLite.

    Parameters
    ----------
    config : TrackingConfig
        The ``tracking`` section of the configuration.
    local_dir : str or Path
        Folder of the SQLite store when no URI is set; created if needed.

    Returns
    -------
    str
        The URI; ``sqlite:///<local_dir>/mlflow.db`` (absolute path) for the local store.
    """
    uri = config.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    d = Path(local_dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'mlflow.db'}"


class Tracker:
    """One MLflow experiment at one tracking URI.

    The experiment is created when it does not exist (with a SQLite store, its
    artifacts go to ``mlartifacts`` beside the database).

    Parameters
    ----------
    uri : str
        The tracking URI (see :func:`resolve_uri`).
    experiment : str
        Name of the experiment.
    registered_model : str
        Name of the registered model that :meth:`log_model` adds versions to.

    Attributes
    ----------
    uri : str
        The tracking URI.
    registered_model : str
        Name of the registered model.
    client : mlflow.MlflowClient
        Client at ``uri``.
    experiment_id : str
        Id of the experiment.
    """

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
            exp_id = self.client.create_experiment(
                experiment, artifact_location=location, tags=EXPERIMENT_KIND
            )
        else:
            exp_id = exp.experiment_id
            for key, value in EXPERIMENT_KIND.items():
                if key not in exp.tags:
                    self.client.set_experiment_tag(exp_id, key, value)
        self.experiment_id = exp_id

    @contextmanager
    def run(self, name: str, tags: dict[str, str] | None = None) -> Iterator[str]:
        """Start a run; yields its id.

        Parameters
        ----------
        name : str
            Name of the run.
        tags : dict of str to str or None, default=None
            Tags of the run.

        Yields
        ------
        str
            The run's id; the run ends when the block exits.
        """
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=name, tags=tags) as active:
            yield active.info.run_id

    @staticmethod
    def log_params(params: dict[str, Any]) -> None:
        """Log parameters to the active run; lists, tuples and dicts as their string.

        Parameters
        ----------
        params : dict of str to Any
            Parameter names and values.
        """
        import mlflow

        mlflow.log_params(
            {k: (str(v) if isinstance(v, list | tuple | dict) else v) for k, v in params.items()}
        )

    @staticmethod
    def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
        """Log metrics to the active run, as floats.

        Parameters
        ----------
        metrics : dict of str to float
            Metric names and values.
        step : int or None, default=None
            Step of the values (the epoch during training).
        """
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    @staticmethod
    def log_artifacts(paths: list[Path], folder: str | None = None) -> None:
        """Upload files to the active run's artifacts.

        Parameters
        ----------
        paths : list of Path
            The files.
        folder : str or None, default=None
            Folder in the run's artifacts; None puts them at the root.
        """
        import mlflow

        for p in paths:
            mlflow.log_artifact(str(p), artifact_path=folder)

    def log_model(self, model: Any, example: Any) -> str:
        """Log a torch model with signature and input example; register it; return the version.

        The model is exported (pt2), which keeps no Python attributes: its
        ``header()`` (architecture, class labels, input shape) goes into the
        MLflow model's metadata, where the predictor reads the labels.

        Parameters
        ----------
        model : torch.nn.Module
            The classifier; moved to the CPU and set to eval mode.
        example : array-like
            An input batch, logged as the input example; the signature is inferred
            from it and the model's output on it.

        Returns
        -------
        str
            The new version of the registered model.
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

    def tag_version(self, version: str, tags: dict[str, Any]) -> None:
        """Set tags on a registered version (values as strings; numbers to 4 decimals).

        Parameters
        ----------
        version
            The registered model's version.
        tags
            Tag names and values.
        """
        for key, value in tags.items():
            text = f"{value:.4f}" if isinstance(value, float) else str(value)
            self.client.set_model_version_tag(self.registered_model, version, key, text)

    def set_champion(self, version: str) -> None:
        """Point the ``champion`` alias at ``version`` and tag it ``role=champion``.

        The version the alias leaves keeps its tags but its ``role`` becomes
        ``former-champion``, so the registry says which version serves.

        Parameters
        ----------
        version
            The registered model's version.
        """
        from mlflow.exceptions import MlflowException

        try:
            previous = self.client.get_model_version_by_alias(self.registered_model, CHAMPION).version
        except MlflowException:
            previous = None
        self.client.set_registered_model_alias(self.registered_model, CHAMPION, version)
        if previous is not None and str(previous) != str(version):
            self.tag_version(str(previous), {"role": "former-champion"})
        self.tag_version(version, {"role": "champion"})
        log.info("alias %s -> %s version %s", CHAMPION, self.registered_model, version)
