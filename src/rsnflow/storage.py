"""Cohorts and outputs in S3-compatible object storage (MinIO, SeaweedFS, AWS) via the ``minio`` SDK.

A prefix is *complete* when its marker object ``_COMPLETE.json`` exists: it is
written last by :meth:`ObjectStore.upload_tree` and lists every file with its
SHA-256, so a half-uploaded cohort is never picked up and a download is
verified file by file. Recurring runs find new cohorts with
:meth:`ObjectStore.discover_cohorts`, which skips those recorded in the
processed manifest (``_rsnflow/processed.json`` under the watched prefix).

Endpoint and credentials come from the environment only, which is how a
Kubernetes Secret reaches a pod (``envFrom``): ``RSNFLOW_S3_ENDPOINT`` (or
``AWS_ENDPOINT_URL``, ``MLFLOW_S3_ENDPOINT_URL``), ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``. They are never logged.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from rsnflow.io import sha256_file
from rsnflow.log import get_logger

__all__ = ["MARKER", "ObjectStore", "StorageError", "parse_uri"]

log = get_logger(__name__)

MARKER = "_COMPLETE.json"
PROCESSED = "_rsnflow/processed.json"
#: Parts of this size for multipart uploads of large files (the S3 minimum is 5 MiB).
PART_SIZE = 16 * 1024 * 1024
T = TypeVar("T")


class StorageError(RuntimeError):
    """An object-storage operation failed; the message names the bucket or object and the reason."""


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` to ``("bucket", "some/prefix")``.

    Parameters
    ----------
    uri : str
        An ``s3://`` URI.

    Returns
    -------
    bucket : str
        Bucket name.
    prefix : str
        Key prefix without leading or trailing ``/`` (empty for the bucket root).

    Raises
    ------
    StorageError
        Not an ``s3://`` URI with a bucket.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{uri}: not an s3://bucket/prefix URI")
    return parsed.netloc, parsed.path.strip("/")


@dataclass
class ObjectStore:
    """A connection to one S3 endpoint, with retries and checksums.

    Attributes
    ----------
    client : minio.Minio
        The SDK client (any object with the same methods, such as a test double).
    endpoint : str
        ``host:port`` of the endpoint, for messages.
    retries : int, default=4
        Retries of a failed request before giving up (network errors and S3 errors other
        than refused access or a missing bucket or key).
    backoff_s : float, default=0.5
        Wait before the first retry, in seconds; doubled at each retry.
    """

    client: Any
    endpoint: str
    retries: int = 4
    backoff_s: float = 0.5

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ObjectStore:
        """Build from ``RSNFLOW_S3_ENDPOINT`` (``http(s)://host:port``) and the AWS credential variables.

        ``AWS_ENDPOINT_URL`` and ``MLFLOW_S3_ENDPOINT_URL`` are read when
        ``RSNFLOW_S3_ENDPOINT`` is unset; an endpoint without a scheme is taken as
        ``http``; ``AWS_REGION`` is passed on when set.

        Parameters
        ----------
        env : dict of str to str, optional
            Variables to read instead of ``os.environ``.

        Returns
        -------
        ObjectStore
            A store with the default retries.

        Raises
        ------
        StorageError
            No endpoint, or no access key or secret key.
        """
        from minio import Minio

        e = os.environ if env is None else env
        endpoint = (
            e.get("RSNFLOW_S3_ENDPOINT") or e.get("AWS_ENDPOINT_URL") or e.get("MLFLOW_S3_ENDPOINT_URL")
        )
        if not endpoint:
            raise StorageError(
                "no S3 endpoint: set RSNFLOW_S3_ENDPOINT (e.g. http://minio-service.kubeflow:9000)"
            )
        key, secret = e.get("AWS_ACCESS_KEY_ID"), e.get("AWS_SECRET_ACCESS_KEY")
        if not key or not secret:
            raise StorageError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        url = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        client = Minio(
            url.netloc,
            access_key=key,
            secret_key=secret,
            secure=url.scheme == "https",
            region=e.get("AWS_REGION"),
        )
        return cls(client, url.netloc)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` with retries and exponential backoff on transient failures."""
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError

        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except S3Error as exc:
                if exc.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                    raise StorageError(
                        f"{what}: access refused by {self.endpoint} ({exc.code}): check the credentials"
                    ) from exc
                if exc.code in ("NoSuchBucket", "NoSuchKey"):
                    raise StorageError(f"{what}: {exc.code} on {self.endpoint}") from exc
                if attempt == self.retries:
                    raise StorageError(f"{what}: {exc.code}: {exc.message}") from exc
            except (HTTPError, OSError) as exc:
                if attempt == self.retries:
                    raise StorageError(f"{what}: cannot reach {self.endpoint} ({exc})") from exc
            log.warning(
                "%s: transient failure, retry %d/%d in %.1f s", what, attempt + 1, self.retries, delay
            )
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def require_bucket(self, bucket: str) -> None:
        """Raise unless ``bucket`` exists.

        Parameters
        ----------
        bucket : str
            Bucket name.

        Raises
        ------
        StorageError
            The bucket does not exist, or the endpoint refused or failed the request.
        """
        if not self._call(f"s3://{bucket}", lambda: self.client.bucket_exists(bucket)):
            raise StorageError(f"s3://{bucket}: bucket does not exist on {self.endpoint}")

    def ensure_bucket(self, bucket: str) -> bool:
        """Create ``bucket`` unless it exists (the chart's MLflow artifact bucket, at install).

        Parameters
        ----------
        bucket : str
            Bucket name.

        Returns
        -------
        bool
            True when it was created, False when it already existed.

        Raises
        ------
        StorageError
            The endpoint refused (e.g. keys without the right to create buckets) or failed.
        """
        if self._call(f"s3://{bucket}", lambda: self.client.bucket_exists(bucket)):
            return False
        self._call(f"s3://{bucket}", lambda: self.client.make_bucket(bucket))
        log.info("s3://%s: bucket created on %s", bucket, self.endpoint)
        return True

    def _get_json(self, bucket: str, key: str) -> Any | None:
        from minio.error import S3Error

        def get() -> Any | None:
            try:
                resp = self.client.get_object(bucket, key)
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    return None
                raise
            try:
                return json.loads(resp.read())
            finally:
                resp.close()
                resp.release_conn()

        return self._call(f"s3://{bucket}/{key}", get)

    def _put_json(self, bucket: str, key: str, data: Any) -> None:
        body = json.dumps(data, indent=1, sort_keys=True).encode()
        self._call(
            f"s3://{bucket}/{key}",
            lambda: self.client.put_object(
                bucket, key, io.BytesIO(body), len(body), content_type="application/json"
            ),
        )

    def upload_tree(self, local_dir: str | Path, uri: str) -> dict[str, str]:
        """Upload every file under ``local_dir`` to ``uri``, then the completion marker.

        Each object carries its SHA-256 as ``sha256`` metadata; the marker
        ``_COMPLETE.json`` is written last, with the hashes and the UTC time.

        Parameters
        ----------
        local_dir : str or Path
            Folder to upload, recursively.
        uri : str
            Destination ``s3://bucket/prefix``; keys are the paths relative to ``local_dir``.

        Returns
        -------
        dict of str to str
            Relative path to SHA-256, as written in the marker.

        Raises
        ------
        StorageError
            Missing bucket, or an upload that failed after the retries.
        """
        bucket, prefix = parse_uri(uri)
        self.require_bucket(bucket)
        root = Path(local_dir)
        files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
        hashes = {}
        for rel, path in files.items():
            key = _key(prefix, rel)
            digest = sha256_file(path)
            upload = functools.partial(
                self.client.fput_object,
                bucket,
                key,
                str(path),
                metadata={"sha256": digest},
                part_size=PART_SIZE,
            )
            self._call(f"s3://{bucket}/{key}", upload)
            hashes[rel] = digest
        self._put_json(
            bucket,
            _key(prefix, MARKER),
            {"files": hashes, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        )
        log.info("uploaded %d files to %s", len(hashes), uri)
        return hashes

    def is_complete(self, uri: str) -> bool:
        """Whether the prefix ``uri`` holds its completion marker.

        Parameters
        ----------
        uri : str
            ``s3://bucket/prefix`` of a cohort or an output.

        Returns
        -------
        bool
            True when ``_COMPLETE.json`` exists under the prefix.
        """
        bucket, prefix = parse_uri(uri)
        return self._get_json(bucket, _key(prefix, MARKER)) is not None

    def download_cohort(self, uri: str, dest: str | Path) -> Path:
        """Download a complete prefix into ``dest``, verifying every file's SHA-256.

        Only the files listed in the marker are downloaded; each is written to a
        ``.part`` file first and moved into place once its checksum matches.

        Parameters
        ----------
        uri : str
            ``s3://bucket/prefix`` written by :meth:`upload_tree`.
        dest : str or Path
            Local folder; created as needed, existing files are replaced.

        Returns
        -------
        Path
            ``dest``.

        Raises
        ------
        StorageError
            Missing bucket, no completion marker (a half-uploaded cohort), a checksum mismatch.
        """
        bucket, prefix = parse_uri(uri)
        self.require_bucket(bucket)
        marker = self._get_json(bucket, _key(prefix, MARKER))
        if marker is None:
            raise StorageError(f"{uri}: incomplete (no {MARKER}); refusing a half-uploaded cohort")
        out = Path(dest)
        for rel, digest in marker["files"].items():
            target = out / rel
            # The marker is data from the bucket: a name may not climb out of ``dest``.
            if Path(rel).is_absolute() or not target.resolve().is_relative_to(out.resolve()):
                raise StorageError(f"{uri}/{MARKER}: the file name {rel!r} points outside the cohort")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            key = _key(prefix, rel)
            self._call(
                f"s3://{bucket}/{key}", functools.partial(self.client.fget_object, bucket, key, str(tmp))
            )
            if sha256_file(tmp) != digest:
                tmp.unlink()
                raise StorageError(f"s3://{bucket}/{key}: checksum mismatch after download")
            tmp.replace(target)
        log.info("downloaded %d files from %s", len(marker["files"]), uri)
        return out

    def cohort_digest(self, uri: str) -> str:
        """A digest of what a complete cohort holds: the SHA-256 of its marker's file list.

        The marker lists every file with its SHA-256, so the digest changes with
        any file's content, a file added or a file removed.

        Parameters
        ----------
        uri : str
            ``s3://bucket/prefix`` of a cohort written by :meth:`upload_tree`.

        Returns
        -------
        str
            Hex SHA-256.

        Raises
        ------
        StorageError
            No completion marker under the prefix.
        """
        bucket, prefix = parse_uri(uri)
        marker = self._get_json(bucket, _key(prefix, MARKER))
        if marker is None:
            raise StorageError(f"{uri}: incomplete (no {MARKER}); refusing a half-uploaded cohort")
        return hashlib.sha256(json.dumps(marker["files"], sort_keys=True).encode()).hexdigest()

    def discover_cohorts(self, uri: str) -> list[str]:
        """Complete cohorts directly under ``uri`` not yet in its processed manifest, sorted.

        Parameters
        ----------
        uri : str
            Watched ``s3://bucket/prefix``; each folder directly under it is a candidate
            cohort (``_rsnflow*`` folders excepted).

        Returns
        -------
        list of str
            ``s3://`` URIs of the new complete cohorts, in lexicographic order.
        """
        return sorted(c for c, state in self.list_cohorts(uri) if state == "complete")

    def list_cohorts(self, uri: str) -> list[tuple[str, str]]:
        """Every cohort folder directly under a watched prefix with its state.

        Parameters
        ----------
        uri : str
            Watched ``s3://bucket/prefix``.

        Returns
        -------
        list of (str, str)
            ``(cohort URI, state)`` sorted by URI; the state is ``processed`` (in
            the processed manifest), ``complete`` (marker present: the next
            recurring run may take it) or ``incomplete`` (no marker: still
            uploading, or copied without ``rsnflow cohort upload``).
        """
        bucket, prefix = parse_uri(uri)
        self.require_bucket(bucket)
        base = f"{prefix}/" if prefix else ""
        entries = self._call(uri, lambda: list(self.client.list_objects(bucket, prefix=base)))
        done = set((self._get_json(bucket, f"{base}{PROCESSED}") or {}).get("cohorts", []))
        found = []
        for obj in entries:
            if not obj.is_dir or obj.object_name.startswith(f"{base}_rsnflow"):
                continue
            cohort = f"s3://{bucket}/{obj.object_name.rstrip('/')}"
            state = (
                "processed" if cohort in done else "complete" if self.is_complete(cohort) else "incomplete"
            )
            found.append((cohort, state))
        return sorted(found)

    def mark_processed(self, watched_uri: str, cohort_uri: str) -> None:
        """Record ``cohort_uri`` in the processed manifest of ``watched_uri``.

        Reads, updates and rewrites ``_rsnflow/processed.json`` under the watched prefix.

        Parameters
        ----------
        watched_uri : str
            The ``s3://bucket/prefix`` given to :meth:`discover_cohorts`.
        cohort_uri : str
            The cohort to record, as :meth:`discover_cohorts` returned it.
        """
        bucket, prefix = parse_uri(watched_uri)
        key = _key(prefix, PROCESSED)
        manifest = self._get_json(bucket, key) or {"cohorts": []}
        manifest["cohorts"] = sorted(set(manifest["cohorts"]) | {cohort_uri})
        self._put_json(bucket, key, manifest)


def _key(prefix: str, name: str) -> str:
    """The object key of ``name`` under ``prefix`` (the bucket's root when the prefix is empty)."""
    return f"{prefix}/{name}" if prefix else name
