"""Run each rsnflow image's own checks inside the image (``make images-test``).

Checks, per image:

- every image: its configured user is not root (uid >= 10000) and is the one the
  checks run as; ``rsnflow --help`` and the image's own ENTRYPOINT + CMD (``--help``
  for the pipeline and training images) exit 0; the templates built into
  ``RSNFLOW_CACHE_DIR`` load without writing;
- pipeline: a tiny simulated cohort's ``ingest`` and one subject's ``preprocess``,
  each as the exact command the compiled KFP pipeline gives that task (kfp.local's
  own executor-input and placeholder code fills it in), on a folder mounted into the
  image; the preprocessed run must match the same code run outside the image;
- train: a forward and backward pass of each of the three architectures;
- serve: ``rsnflow serve`` on a saved model answers ``/v2/health/ready`` and a V2
  inference request with the probabilities the model gives outside the image.

How the image runs. ``podman run`` cannot start a container on this project's
build machines: crun's ``setrlimit(RLIMIT_NOFILE, RLIMIT_NPROC)`` is refused (the
sandbox lacks CAP_SYS_RESOURCE) and crun does not run under the machine's hybrid
cgroup v1/v2 layout. So each command runs in the image's own root filesystem
(``podman create`` + ``podman mount``: the image's files, writable as a
container's would be), as the image's user (``chroot --userspec``), with the
image's environment and working directory, in a private mount namespace
(``unshare --mount``) holding /proc, /dev, a fresh /tmp and the check's data
folder at /data. What differs from ``podman run``: no pid, network or cgroup
isolation (the server binds the host's loopback) and no seccomp profile.

    python tools/image_checks.py [--registry ghcr.io/rsnflow] [--version 0.1.0] [--engine podman]
        [--images pipeline,train,serve] [--work DIR] [--json build/image-checks.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = "/data"  # where the check's folder appears inside the image


@dataclass
class Image:
    """A built image: its name, configuration and mounted root filesystem."""

    ref: str
    engine: str
    config: dict[str, Any]
    size_mb: float
    rootfs: Path
    container: str
    data: Path  # host folder bound at /data

    @property
    def user(self) -> str:
        return str(self.config.get("User") or "0")

    def host(self, path: str) -> Path:
        """Where a path under /data inside the image lies on this machine."""
        return self.data / Path(path).relative_to(DATA)

    def command(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 900, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the image (see the module docstring) and return its output."""
        proc = subprocess.run(self._argv(argv, env), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n  " + "\n  ".join(tail))
        return proc

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the image in the background (its own process group)."""
        with log.open("wb") as out:
            return subprocess.Popen(self._argv(argv, None), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip

    def _argv(self, argv: list[str], env: dict[str, str] | None) -> list[str]:
        uid, _, gid = self.user.partition(":")
        environment = list(self.config.get("Env") or []) + [f"{k}={v}" for k, v in (env or {}).items()]
        workdir = self.config.get("WorkingDir") or "/"
        # Mounts first (as root, in the new namespace), then chroot as the image's user.
        script = (
            'set -e; R="$1"; shift; mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"; '
            'mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"; '
            'mkdir -p "$R/data"; mount --bind "$DATA_DIR" "$R/data"; '
            f'exec chroot --userspec={uid}:{gid or uid} "$R" /usr/bin/env -i HOME=/tmp "$@"'
        )
        inner = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', workdir, *argv]
        return ["env", f"DATA_DIR={self.data}", "unshare", "--mount", "--fork", "/bin/sh", "-c", script,
                "sh", str(self.rootfs), *environment, *inner]  # fmt: skip


@contextmanager
def mounted(ref: str, engine: str, data: Path) -> Iterator[Image]:
    """The image ``ref`` created as a container and mounted; removed afterwards."""
    (inspect,) = json.loads(_engine(engine, "image", "inspect", ref))
    container = _engine(engine, "create", ref).strip()
    try:
        rootfs = Path(_engine(engine, "mount", container).strip())
        yield Image(ref, engine, inspect["Config"], inspect["Size"] / 1e6, rootfs, container, data)
    finally:
        subprocess.run([engine, "umount", container], capture_output=True)
        subprocess.run([engine, "rm", "-f", container], capture_output=True)


def _engine(engine: str, *args: str) -> str:
    return subprocess.run([engine, *args], check=True, capture_output=True, text=True).stdout


# -- checks -----------------------------------------------------------------------------------


def check_user(image: Image) -> str:
    uid = int(image.user.split(":")[0]) if image.user.split(":")[0].isdigit() else -1
    assert uid >= 10000, f"configured user {image.user!r} is root or not a numeric uid >= 10000"
    seen = image.command(["id", "-u"]).stdout.strip()
    assert seen == str(uid), f"ran as uid {seen}, configured {uid}"
    return f"user {image.user}"


def check_help(image: Image) -> str:
    image.command(["rsnflow", "--help"])
    entry = list(image.config.get("Entrypoint") or []) + list(image.config.get("Cmd") or [])
    if "--help" in entry:
        image.command(entry)
        return f"rsnflow --help and `{' '.join(entry)}` exit 0"
    return "rsnflow --help exits 0"


def check_templates(image: Image) -> str:
    # Read-only cache: any attempt to build the templates again would fail here.
    code = (
        "import os; from pathlib import Path; from rsnflow.space import load_template, load_brain_mask; "
        "load_template(); load_brain_mask(); "
        "c = Path(os.environ['RSNFLOW_CACHE_DIR']); print(sum(1 for _ in c.rglob('*.nii.gz')))"
    )
    n = image.command(["python", "-c", code]).stdout.strip()
    return f"templates load from the image's cache ({n} files)"


def check_kfp_tasks(image: Image) -> str:
    """ingest, then preprocess of one subject, as the compiled pipeline's commands."""
    import numpy as np

    from rsnflow.io import open_nifti
    from rsnflow.simulate import simulate_cohort

    bids = image.data / "bids"
    simulate_cohort(bids, profile="tiny", seed=5, n_subjects=2, n_volumes=120)
    # only the truth just simulated (the task ingests raw BIDS); rmdir refuses a derivatives
    # folder that holds anything else
    shutil.rmtree(bids / "derivatives" / "groundtruth")
    (bids / "derivatives").rmdir()
    overrides = {"ica": {"order": 20}}
    tasks = _compiled_tasks(image.ref)
    ingest = _kfp_command(tasks, "ingest", {"cohort_uri": f"{DATA}/bids", "content_hash": "image-check",
                                             "seed": 0, "overrides": overrides}, image.data)  # fmt: skip
    image.command(ingest.argv)
    subjects = ingest.output("Output")
    assert subjects == ["01", "02"], subjects
    from kfp import dsl

    cohort = dsl.Dataset(name="cohort", uri=ingest.artifact("cohort"), metadata={})
    prep = _kfp_command(tasks, "preprocess", {"cohort": cohort, "subject": "01", "overrides": overrides},
                        image.data)  # fmt: skip
    image.command(prep.argv)
    status = prep.output("Output")
    assert status == "ok", status
    (inside,) = image.host(prep.artifact("derivatives")).rglob("*desc-preproc_bold.nii.gz")
    # The same run preprocessed by the same code outside the image.
    from rsnflow.config import load_config
    from rsnflow.preprocess.participant import preprocess_subject

    outside_dir = image.data.parent / "outside"
    preprocess_subject(
        next(bids.rglob("sub-01_*bold.nii.gz")), outside_dir, "01", load_config().preprocess, "cpu"
    )
    (outside,) = outside_dir.rglob("*desc-preproc_bold.nii.gz")
    a = np.asarray(open_nifti(inside).dataobj, dtype=np.float64)
    b = np.asarray(open_nifti(outside).dataobj, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float(np.abs(a - b).max() / np.abs(b).max())
    assert err < 1e-3, f"preprocessed run differs from outside the image by {err:.2e} of its range"
    return f"KFP ingest (2 subjects) and preprocess sub-01 {a.shape}: max difference {err:.1e} of range"


def check_training(image: Image) -> str:
    code = (
        "import time, torch; from rsnflow.models.classifier import RSNClassifier; "
        "from rsnflow.space import load_brain_mask; torch.manual_seed(0); "
        "mask = load_brain_mask().get_fdata() > 0; out = []\n"
        "for arch in ('mlp', 'resnet2p5d', 'r3d18'):\n"
        "    m = RSNClassifier(arch, ['a', 'b', 'c'], mask); t = time.perf_counter()\n"
        "    loss = torch.nn.functional.cross_entropy(m(torch.randn(2, 45, 54, 45)), torch.tensor([0, 2]))\n"
        "    loss.backward(); assert all(p.grad is not None for p in m.parameters() if p.requires_grad)\n"
        "    out.append(f'{arch} {time.perf_counter() - t:.1f} s')\n"
        "print(', '.join(out))"
    )
    return "forward+backward: " + image.command(["python", "-c", code]).stdout.strip()


def check_serving(image: Image) -> str:
    import numpy as np
    import torch

    from rsnflow.models.classifier import RSNClassifier, save_classifier
    from rsnflow.space import load_brain_mask

    torch.manual_seed(0)
    model = RSNClassifier("mlp", ["DMN", "Noise", "Visual"], load_brain_mask().get_fdata() > 0).eval()
    save_classifier(model, image.data / "model")
    maps = np.random.default_rng(0).standard_normal((2, 45, 54, 45)).astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(maps)), 1).numpy()
    port = _free_port()
    server = image.start(["rsnflow", "serve", f"{DATA}/model", "--host", "127.0.0.1", "--port", str(port)],
                         image.data.parent / "serve.log")  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{url}/v2/health/ready", server, 180)
        body = {"inputs": [{"name": "maps", "shape": list(maps.shape), "datatype": "FP32",
                            "data": maps.ravel().tolist()}]}  # fmt: skip
        req = urllib.request.Request(f"{url}/v2/models/rsn-classifier/infer", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=60) as resp:
            out = json.load(resp)
        outputs = {o["name"]: o for o in out["outputs"]}
        # Three classes: the top "5" are all of them, most probable first.
        got = np.asarray(outputs["top_probabilities"]["data"], dtype=np.float32).reshape(expected.shape)
        err = float(np.abs(got - -np.sort(-expected, axis=1)).max())
        assert outputs["label"]["data"][0] in ("DMN", "Noise", "Visual", "Unknown")
        assert err < 1e-5, f"served probabilities differ by {err:.1e}"
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
    return f"/v2/health/ready, V2 infer of 2 maps: probabilities within {err:.0e} of the model outside"


CHECKS: dict[str, list[Callable[[Image], str]]] = {
    "pipeline": [check_user, check_help, check_templates, check_kfp_tasks],
    "train": [check_user, check_help, check_templates, check_training],
    "serve": [check_user, check_help, check_templates, check_serving],
}


# -- KFP task commands ------------------------------------------------------------------------


@dataclass
class TaskCommand:
    """A compiled KFP task's command with its inputs filled in, and where its outputs land."""

    argv: list[str]
    executor_input: dict[str, Any]
    data: Path  # the host folder mounted at /data

    def output(self, name: str) -> Any:
        """An output parameter, as the task's executor output (read by KFP's driver) holds it."""
        path = self.data / Path(self.executor_input["outputs"]["outputFile"]).relative_to(DATA)
        return json.loads(path.read_text())["parameterValues"][name]

    def artifact(self, name: str) -> str:
        return str(self.executor_input["outputs"]["artifacts"][name]["artifacts"][0]["uri"])


def _compiled_tasks(image_ref: str) -> dict[str, Any]:
    """The pipeline compiled with this image, as kfp.local reads it."""
    import yaml

    from kfp import compiler
    from kfp_pipelines.rsn_pipeline import rsn_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(rsn_pipeline, str(path))
        spec = next(yaml.safe_load_all(path.read_text()))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    if image_ref not in images:
        raise RuntimeError(f"the compiled pipeline does not use {image_ref} (it uses {sorted(images)})")
    return spec


def _kfp_command(spec: dict[str, Any], task: str, arguments: dict[str, Any], data: Path) -> TaskCommand:
    """``task``'s command as kfp.local would run it, its pipeline root under /data."""
    from google.protobuf import json_format
    from kfp.local import executor_input_utils, placeholder_utils
    from kfp.pipeline_spec import pipeline_spec_pb2

    component = json_format.ParseDict(spec["components"][f"comp-{task}"], pipeline_spec_pb2.ComponentSpec())
    container = spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]
    pipeline_root = f"{DATA}/pipeline_root"
    task_root = executor_input_utils.construct_local_task_root(pipeline_root, "image-check", task)
    executor_input = executor_input_utils.construct_executor_input(component, arguments, task_root, False)
    as_dict = executor_input_utils.executor_input_to_dict(executor_input, component)
    argv = placeholder_utils.replace_placeholders(
        list(container["command"]) + list(container["args"]),
        as_dict,
        "image-check",
        task,
        pipeline_root,
        "check",
    )
    return TaskCommand(argv, as_dict, data)


# -- helpers ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registry", default="ghcr.io/rsnflow")
    p.add_argument("--version", default=None, help="image tag (default: the package version)")
    p.add_argument("--engine", default=shutil.which("podman") or "podman")
    p.add_argument("--images", default="pipeline,train,serve")
    p.add_argument("--work", type=Path, default=None, help="keep the checks' files here")
    p.add_argument("--json", type=Path, default=ROOT / "build" / "image-checks.json")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("needs root: it mounts the images' filesystems and enters them with chroot")
    from rsnflow import __version__

    version = args.version or __version__
    work = args.work or Path(tempfile.mkdtemp(prefix="rsnflow-image-checks-"))
    results: list[dict[str, Any]] = []
    for name in args.images.split(","):
        ref = f"{args.registry}/rsnflow-{name}:{version}"
        if name == "pipeline":
            os.environ.setdefault("RSNFLOW_PIPELINE_IMAGE", ref)  # the compiled tasks must name this image
        data = work / name / "data"
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o777)  # the image's user writes the task outputs here
        with mounted(ref, args.engine, data) as image:
            for check in CHECKS[name]:
                t0 = time.perf_counter()
                try:
                    detail, ok = check(image), True
                except Exception as exc:  # every check reports; the run goes on
                    detail, ok = f"{type(exc).__name__}: {exc}", False
                    traceback.print_exc(file=sys.stderr)
                row = {"image": ref, "size_mb": round(image.size_mb), "check": check.__name__, "ok": ok,
                       "seconds": round(time.perf_counter() - t0, 1), "detail": detail}  # fmt: skip
                results.append(row)
                mark = "ok  " if ok else "FAIL"
                print(f"{mark} {name:8s} {check.__name__:18s} {row['seconds']:6.1f} s  {detail}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    failed = [r for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)}/{len(results)} checks passed; {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
