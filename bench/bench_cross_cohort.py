"""The cross-cohort figure: classifiers trained on one cohort, applied to a new one.

The paper's accuracy comes from maps of one group decomposition in train and
test. A classifier is really used on a new cohort, with its own group ICA and
its own components. This script simulates an independent cohort (another
seed), runs it through the same stages (preprocess, group ICA, dual
regression, automatic labels, dataset), and evaluates the models of a
finished run on it beside their within-decomposition Table 1::

    python bench/bench_cross_cohort.py WORK_DIR [--profile demo] [--seed 1] [--out DIR]

``WORK_DIR`` is the work directory of ``rsnflow run`` (``make run`` writes
``work/``); its newest pipeline run gives the dataset and the three models.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rsnflow.cli import EXIT_OK, main


def _newest_run(work: Path) -> tuple[Path, list[Path]]:
    runs = sorted((work / "pipeline_root").glob("rsnflow-*"), key=lambda p: p.stat().st_mtime)
    for run in reversed(runs):
        dataset = run / "dataset" / "data"
        models = sorted((run / "evaluate" / "table" / "models").glob("*/model.json"))
        if (dataset / "manifest.json").exists() and models:
            return dataset, [m.parent for m in models]
    raise SystemExit(f"{work}: no finished pipeline run with a dataset and models (run `make run` first)")


def _step(name: str, argv: list[str]) -> None:
    t0 = time.perf_counter()
    status = main(argv)
    print(f"{name}: exit {status} in {time.perf_counter() - t0:.0f} s", flush=True)
    if status not in (EXIT_OK, 3):
        raise SystemExit(f"{name} failed (exit {status})")


def run(work: Path, profile: str, seed: int, out: Path, max_maps: int) -> list[Path]:
    dataset, models = _newest_run(work)
    capped = ["--max-maps", str(max_maps)]
    bids, deriv, cross = out / "bids", out / "derivatives" / "rsnflow", out / "dataset"
    common = ["--seed", str(seed), "-q"]
    if not (cross / "manifest.json").exists():
        _step("simulate", ["simulate", str(bids), "--profile", profile, *common])
        _step("preprocess", ["preprocess", str(bids), str(deriv), *common])
        _step("group-ica", ["group-ica", str(deriv), *common])
        _step("dual-regression", ["dual-regression", str(deriv), *common])
        _step("label", ["label", str(deriv), *common])
        _step("dataset", ["dataset", str(deriv), str(cross), *common])
    tables = []
    # Every map for the MLP; a seeded sample per split for all three (r3d_18 runs ~4 maps/s on a CPU).
    for name, chosen, cap in (("mlp", [m for m in models if m.name == "mlp"], []), ("all", models, capped)):
        if not chosen:
            continue
        report = out / f"evaluation-{name}"
        argv = [
            "evaluate",
            str(dataset),
            *map(str, chosen),
            "--out",
            str(report),
            "--cross-dataset",
            str(cross),
        ]
        _step(f"evaluate {name}", [*argv, *cap, "--no-tracking", "-q"])
        tables.append(report / "table1.md")
    return tables


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path)
    ap.add_argument("--profile", default="demo", choices=["tiny", "demo", "beijing"])
    ap.add_argument("--seed", type=int, default=1, help="seed of the new cohort (the run's own is 0)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--max-maps", type=int, default=60, help="maps per split when all three models are evaluated"
    )
    args = ap.parse_args()
    out = args.out or args.work / f"cross-cohort-seed{args.seed}"
    for table in run(args.work, args.profile, args.seed, out, args.max_maps):
        print(table.read_text())
    sys.exit(0)
