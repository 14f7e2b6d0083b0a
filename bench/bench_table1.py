"""Table 1 on one dataset: the three classifiers trained with the paper's settings, side by side.

Each architecture is trained by ``rsnflow train`` with the paper's settings
(the defaults without rsnflow's synthetic noise and whole-network maps: 25
epochs, batch 32, SGD lr 1e-3 momentum 0.9, weighted cross-entropy, random
initialisation; on a CPU with BF16 units the two CNNs
train in bfloat16 autocast, channels-last), then ``rsnflow evaluate`` compares
them (test accuracy, macro-F1, ECE, training time, inference time per map) and
draws the learning curves. Training is resumable: run the same command again
after a kill and each model continues from its last finished epoch (a finished
model is not retrained). Prints Table 1, every model's learning curve and the
wall time of each command, as markdown. Usage::

    python bench/bench_table1.py DATASET OUT [--archs mlp resnet2p5d r3d18] [--epochs 25] [--lr 1e-3]

``--lr`` departs from the paper's learning rate (said in ``OUT/paper.yaml``):
on a split as small as the demo's, 25 epochs are 16 times fewer SGD steps
than the paper's 25 epochs of the Beijing split.

``OUT/<arch>`` holds each model, ``OUT/report`` the evaluation (``table1.md``,
``index.html``, ``learning_curves.png``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from rsnflow.cli import EXIT_OK, main


def _run(argv: list[str]) -> float:
    """Seconds of one ``rsnflow`` command; fails loudly when it does."""
    t0 = time.perf_counter()
    rc = main(argv)
    if rc != EXIT_OK:
        raise SystemExit(f"rsnflow {' '.join(argv)}: exit {rc}")
    return time.perf_counter() - t0


def _finished(model_dir: Path, epochs: int, lr: float) -> bool:
    """A model trained for these epochs at this learning rate (another is trained again)."""
    meta = model_dir / "model.json"
    params = json.loads(meta.read_text()).get("params", {}) if meta.is_file() else {}
    return params.get("epochs") == epochs and float(params.get("lr", "nan")) == lr


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--archs", nargs="+", default=["mlp", "resnet2p5d", "r3d18"])
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate (the paper's: 1e-3)")
    args = ap.parse_args()
    walls: dict[str, float] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    paper = args.out / "paper.yaml"
    paper.write_text(f"train:\n  noise_maps: 0.0\n  whole_networks: 0.0\n  lr: {args.lr!r}\n")
    for arch in args.archs:
        model_dir = args.out / arch
        if _finished(model_dir, args.epochs, args.lr):
            print(f"{arch}: already trained for {args.epochs} epochs in {model_dir}")
            continue
        # the paper's settings: only the maps of the decomposition, none made up
        argv = ["--seed", str(args.seed), "--config", str(paper), "train", str(args.dataset), str(model_dir)]
        argv += ["--arch", arch]
        walls[f"train {arch}"] = _run([*argv, "--epochs", str(args.epochs), "--no-tracking", "--resume"])
    report = args.out / "report"
    models = [str(args.out / a) for a in args.archs]
    argv = ["--seed", str(args.seed), "evaluate", str(args.dataset), *models, "--out", str(report)]
    walls["evaluate"] = _run([*argv, "--no-tracking"])
    print((report / "table1.md").read_text())
    for arch in args.archs:
        history = pd.read_csv(args.out / arch / "history.tsv", sep="\t")
        cols = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds"]
        print(f"\n## {arch}: learning curve\n\n" + history[cols].round(3).to_markdown(index=False))
    print("\n| command | wall |\n|---|---|")
    for what, seconds in walls.items():
        print(f"| {what} | {seconds / 60:.1f} min |")


if __name__ == "__main__":
    main_bench()
