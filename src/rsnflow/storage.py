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
    """``s3://bucket/some/prefix`` to ``("bucket", "some/prefix")``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{uri}: not an s3://bucket/prefix URI")
    return parsed.netloc, parsed.path.strip("/")


@dataclass
class ObjectStore:
    """A connection to one S3 endpoint, with retries and checksums."""

    client: Any
    endpoint: str
    retries: int = 4
    backoff_s: float = 0.5

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ObjectStore:
        """Build from ``RSNFLOW_S3_ENDPOINT`` (``http(s)://host:port``) and the AWS credential variables."""
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
        if not self._call(f"s3://{bucket}", lambda: self.client.bucket_exists(bucket)):
            raise StorageError(f"s3://{bucket}: bucket does not exist on {self.endpoint}")

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

        Returns
        -------
        dict
            Relative path to SHA-256, as written in the marker.
        """
        bucket, prefix = parse_uri(uri)
        self.require_bucket(bucket)
        root = Path(local_dir)
        files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
        hashes = {}
        for rel, path in files.items():
            key = f"{prefix}/{rel}" if prefix else rel
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
            f"{prefix}/{MARKER}" if prefix else MARKER,
            {"files": hashes, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        )
        log.info("uploaded %d files to %s", len(hashes), uri)
        return hashes

    def is_complete(self, uri: str) -> bool:
        bucket, prefix = parse_uri(uri)
        return self._get_json(bucket, f"{prefix}/{MARKER}") is not None

    def download_cohort(self, uri: str, dest: str | Path) -> Path:
        """Download a complete prefix into ``dest``, verifying every file's SHA-256.

        Raises
        ------
        StorageError
            Missing bucket, no completion marker (a half-uploaded cohort), a checksum mismatch.
        """
        bucket, prefix = parse_uri(uri)
        self.require_bucket(bucket)
        marker = self._get_json(bucket, f"{prefix}/{MARKER}")
        if marker is None:
            raise StorageError(f"{uri}: incomplete (no {MARKER}); refusing a half-uploaded cohort")
        out = Path(dest)
        for rel, digest in marker["files"].items():
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            key = f"{prefix}/{rel}"
            self._call(
                f"s3://{bucket}/{key}", functools.partial(self.client.fget_object, bucket, key, str(tmp))
            )
            if sha256_file(tmp) != digest:
                tmp.unlink()
                raise StorageError(f"s3://{bucket}/{key}: checksum mismatch after download")
            tmp.replace(target)
        log.info("downloaded %d files from %s", len(marker["files"]), uri)
        return out

    def discover_cohorts(self, uri: str) -> list[str]:
        """Complete cohorts directly under ``uri`` not yet in its processed manifest, sorted."""
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
            if cohort not in done and self.is_complete(cohort):
                found.append(cohort)
        return sorted(found)

    def mark_processed(self, watched_uri: str, cohort_uri: str) -> None:
        """Record ``cohort_uri`` in the processed manifest of ``watched_uri``."""
        bucket, prefix = parse_uri(watched_uri)
        key = f"{prefix}/{PROCESSED}" if prefix else PROCESSED
        manifest = self._get_json(bucket, key) or {"cohorts": []}
        manifest["cohorts"] = sorted(set(manifest["cohorts"]) | {cohort_uri})
        self._put_json(bucket, key, manifest)
