"""Upload, run and schedule the compiled pipeline on a KFP endpoint (``kfp.Client``).

A recurring run watches a bucket prefix: its ``cohort_uri`` is
``s3://bucket/prefix/*``, and at each trigger the ingest step takes the oldest
complete cohort under the prefix that is not yet in the prefix's processed
manifest (see :mod:`rsnflow.storage`), records it there, and runs it.
What needs a live KFP API server (upload, runs, recurring runs) is not run by
the tests; the requests are built and checked here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["EndpointError", "recurring_run_request", "schedule", "submit"]


class EndpointError(ConnectionError):
    """The KFP API endpoint cannot be reached or refused the request (one line, naming the host)."""


@contextlib.contextmanager
def _talking_to(host: str) -> Iterator[None]:
    """Turn the transport's and the API's exceptions into one :class:`EndpointError` naming ``host``."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except (HTTPError, OSError, ApiException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise EndpointError(f"{host}: cannot reach the KFP API ({type(exc).__name__}: {reason})") from exc


def _client(host: str, namespace: str | None) -> Any:
    import kfp

    # Credentials: the in-cluster service-account token or KF_PIPELINES_SA_TOKEN_PATH, read by kfp itself.
    with _talking_to(host):
        return kfp.Client(host=host, namespace=namespace)


def submit(
    host: str,
    package: str | Path,
    arguments: dict[str, Any],
    experiment: str = "rsnflow",
    run_name: str | None = None,
    namespace: str | None = None,
) -> str:
    """Start one run of the compiled pipeline; returns the run id."""
    client = _client(host, namespace)
    with _talking_to(host):
        run = client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            experiment_name=experiment,
            run_name=run_name,
            enable_caching=True,
        )
    return str(run.run_id)


def recurring_run_request(watch_uri: str, cron: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a recurring run that processes new cohorts under ``watch_uri``.

    Raises
    ------
    ValueError
        ``watch_uri`` is not ``s3://bucket/prefix``, or ``cron`` is not KFP's
        six-field form (seconds first).
    """
    from rsnflow.storage import parse_uri

    bucket, prefix = parse_uri(watch_uri)
    if len(cron.split()) != 6:
        raise ValueError(f"cron {cron!r}: KFP expects six fields, seconds first (e.g. '0 0 2 * * *')")
    return {
        "cron_expression": cron,
        "max_concurrency": 1,  # one cohort at a time: the processed manifest is updated by each run
        "no_catchup": True,
        "params": {**arguments, "cohort_uri": f"s3://{bucket}/{prefix}/*".replace("//*", "/*")},
    }


def schedule(
    host: str,
    package: str | Path,
    watch_uri: str,
    cron: str,
    arguments: dict[str, Any],
    experiment: str = "rsnflow",
    namespace: str | None = None,
) -> str:
    """Create the recurring run; returns its id."""
    request = recurring_run_request(watch_uri, cron, arguments)
    client = _client(host, namespace)
    with _talking_to(host):
        exp = client.create_experiment(experiment, namespace=namespace)
        job = client.create_recurring_run(
            experiment_id=exp.experiment_id,
            job_name=f"rsnflow-watch-{parse_name(watch_uri)}",
            pipeline_package_path=str(package),
            enable_caching=True,
            **request,
        )
    return str(job.recurring_run_id)


def parse_name(uri: str) -> str:
    """A Kubernetes-safe name fragment for ``uri``."""
    return "".join(ch if ch.isalnum() else "-" for ch in uri.removeprefix("s3://")).strip("-").lower()[:40]
