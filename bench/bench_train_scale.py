"""Table 1 timings at the Beijing size (176 subjects x 100 components = 17,600 maps).

Simulating and preprocessing 176 Beijing-shaped subjects takes about an hour
on two cores, so this benchmark tiles a finished dataset instead: every
subject of ``DATASET`` is repeated until there are ``--subjects`` of them,
each copy keeping its original split (copies of a test subject are only ever
in the test split, so nothing leaks). The training and inference *times* are
those of a Beijing-size dataset; the accuracies are those of the original
decomposition's held-out subjects (each seen ``--subjects``/N times) and are
reported only as a check that training worked. Usage::

    python bench/bench_train_scale.py DATASET [--subjects 176] [--arch mlp] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rsnflow.cli import EXIT_OK, main


def tile_dataset(src: Path, dst: Path, n_subjects: int) -> Path:
    """Write a dataset of ``n_subjects`` subjects made of copies of ``src``'s subjects."""
    index = pd.read_csv(src / "index.tsv", sep="\t", dtype={"subject": str})
    subjects = list(dict.fromkeys(index["subject"]))
    maps = np.load(src / "maps.npy", mmap_mode="r")
    rows = []
    for k in range(n_subjects):
        original = subjects[k % len(subjects)]
        part = index[index["subject"] == original].copy()
        part["subject"] = f"{original}c{k // len(subjects):02d}"
        rows.append(part)
    tiled = pd.concat(rows, ignore_index=True)
    dst.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(
        dst / "maps.npy", mode="w+", dtype=maps.dtype, shape=(len(tiled), *maps.shape[1:])
    )
    for start in range(0, len(tiled), 512):
        stop = min(start + 512, len(tiled))
        out[start:stop] = maps[tiled["sample"].to_numpy()[start:stop]]
    out.flush()
    tiled["sample"] = np.arange(len(tiled))
    tiled.to_csv(dst / "index.tsv", sep="\t", index=False)
    shutil.copy(src / "mask.npy", dst / "mask.npy")
    manifest = json.loads((src / "manifest.json").read_text())
    manifest.update(
        n_samples=len(tiled),
        n_subjects=n_subjects,
        source=f"{src} tiled to {n_subjects} subjects (bench/bench_train_scale.py: timing only)",
    )
    manifest["sha256"]["dataset"] = f"tiled-{manifest['sha256']['dataset']}-{n_subjects}"
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return dst


def run(dataset: Path, n_subjects: int, arch: str, out: Path) -> Path:
    tiled = out / "dataset"
    if not (tiled / "manifest.json").exists():
        t0 = time.perf_counter()
        tile_dataset(dataset, tiled, n_subjects)
        print(f"tiled dataset: {time.perf_counter() - t0:.0f} s", flush=True)
    model = out / arch
    t0 = time.perf_counter()
    assert main(["train", str(tiled), str(model), "--arch", arch, "--no-tracking", "-q"]) == EXIT_OK
    print(f"rsnflow train --arch {arch}: {time.perf_counter() - t0:.0f} s wall", flush=True)
    report = out / "evaluation"
    # prints Table 1
    assert main(["evaluate", str(tiled), str(model), "--out", str(report), "--no-tracking", "-q"]) == EXIT_OK
    return report / "table1.md"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--subjects", type=int, default=176)
    ap.add_argument("--arch", default="mlp", choices=["mlp", "resnet2p5d", "r3d18"])
    ap.add_argument("--out", type=Path, default=Path("work/bench-train-scale"))
    args = ap.parse_args()
    run(args.dataset, args.subjects, args.arch, args.out)
