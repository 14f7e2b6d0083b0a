"""Dataset benchmarks: reader throughput vs one NIfTI per sample, build time, label agreement.

Usage: python bench/bench_dataset.py [DERIV_DIR BIDS_DIR]
With no arguments, simulates a small demo-shaped cohort (6 subjects, order 40)
first. Prints JSON: samples/s of the memmap reader and of the naive reader
(nibabel, one .nii.gz per map) with 0 and 2 workers (median of 3), the build
time and its per-subject projection, and automatic-label agreement with the
simulator's ground truth.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rsnflow.config import load_config
from rsnflow.dataset import MapDataset, build_dataset, make_loader
from rsnflow.labeling import label_components, load_group_maps
from rsnflow.simulate.truth import component_truth
from rsnflow.space import MNI4_AFFINE

N_SAMPLES = 640


class NiftiPerSample(Dataset):
    """The naive way: one NIfTI file per map, loaded with nibabel at every access."""

    def __init__(self, files: list[Path], targets: np.ndarray) -> None:
        self.files, self.targets = files, targets

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        vol = nib.load(self.files[i]).get_fdata(dtype=np.float32)
        return torch.from_numpy(vol).unsqueeze(0), int(self.targets[i])


def _throughput(loader: DataLoader) -> float:
    t0 = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - t0)


def _prepare() -> tuple[Path, Path]:
    from rsnflow.ica import dual_regression_cohort, group_ica
    from rsnflow.preprocess import preprocess_cohort
    from rsnflow.simulate import simulate_cohort

    root = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    cohort = simulate_cohort(root / "bids", profile="demo", seed=3, n_subjects=6)
    cfg = load_config(overrides={"ica": {"order": 40}, "preprocess": {"n_jobs": 2}})
    deriv = root / "deriv"
    preprocess_cohort(cohort.bids_dir, deriv, cfg.preprocess)
    group_ica(deriv, cfg.ica, report=False)
    dual_regression_cohort(deriv)
    return deriv, cohort.bids_dir


def main() -> None:
    deriv, bids = (Path(sys.argv[1]), Path(sys.argv[2])) if len(sys.argv) > 2 else _prepare()
    cfg = load_config()
    out: dict[str, object] = {}
    t0 = time.perf_counter()
    table = label_components(deriv, cfg.labeling, report=False)
    out["label_seconds"] = round(time.perf_counter() - t0, 2)
    zmaps, mask = load_group_maps(deriv)
    truth = component_truth(bids, zmaps, mask)
    agree = table["label"].to_numpy() == truth["truth"].to_numpy()
    out["label_agreement"] = round(float(agree.mean()), 4)
    out["label_components"] = len(agree)
    out["label_errors"] = [
        f"{t} -> {a}" for t, a in zip(truth["truth"][~agree], table["label"][~agree], strict=True)
    ]

    work = Path(tempfile.mkdtemp(prefix="bench-ds-"))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        manifest = build_dataset(deriv, work / "dataset", cfg.dataset)
        times.append(time.perf_counter() - t0)
    build = statistics.median(times)
    out["build_seconds"] = round(build, 2)
    out["build_subjects"] = manifest["n_subjects"]
    out["build_maps"] = manifest["n_samples"]
    per_subject = build / manifest["n_subjects"]
    out["build_projection_beijing_176x100_seconds"] = round(
        per_subject * 176 * 100 / manifest["n_components"], 1
    )

    ds = MapDataset(work / "dataset", "all", "volume")
    n = min(N_SAMPLES, len(ds))
    subset = torch.utils.data.Subset(ds, range(n))
    arr = np.load(work / "dataset" / "maps.npy", mmap_mode="r")
    nifti_dir = work / "nifti"
    nifti_dir.mkdir()
    files = []
    for i in range(n):
        f = nifti_dir / f"map{i:05d}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(arr[i], dtype=np.float32), MNI4_AFFINE), f)
        files.append(f)
    naive = NiftiPerSample(files, ds.targets.numpy()[:n])
    for workers in (0, 2):
        ours = [_throughput(make_loader(subset, 32, shuffle=False, num_workers=workers)) for _ in range(3)]
        base = [_throughput(DataLoader(naive, 32, num_workers=workers)) for _ in range(3)]
        out[f"reader_samples_per_s_w{workers}"] = round(statistics.median(ours), 1)
        out[f"naive_nifti_samples_per_s_w{workers}"] = round(statistics.median(base), 1)
        out[f"speedup_w{workers}"] = round(statistics.median(ours) / statistics.median(base), 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
