"""Single-run ICA of simulated runs, and a trained classifier's labels of its components, against truth.

For each run of ``DERIV`` (optionally only ``--participants``): ``rsnflow
subject-ica`` (order ``auto`` unless given), then ``rsnflow classify --maps
sica`` with ``MODEL``. Against the simulator's truth for that subject (its own
true network maps, smoothed as the data): how many of the 56 true networks the
run's components recover (best signed spatial r), and how the classifier labels
the components:

- components that match a true network (r >= 0.5): the right network (the
  network of the best-matching true map) and the right label;
- components that match none (r < 0.3): labelled Noise or Unknown, or abstained.

Usage::

    python bench/bench_subject_ica.py DERIV BIDS MODEL [--participants 14 15 16] [--order auto]
"""

from __future__ import annotations

import argparse
import time

import nibabel as nib
import numpy as np
import pandas as pd

from rsnflow.atlas import NOISE, UNKNOWN, load_taxonomy
from rsnflow.cli import EXIT_OK, main
from rsnflow.ica.group import preprocessed_runs
from rsnflow.ica.matching import spatial_correlation
from rsnflow.layout import sica_outputs
from rsnflow.simulate.truth import true_network_maps


def score_run(deriv: str, bids: str, run: object, subject: str) -> dict[str, float]:
    """Recovery and classification figures of one run's components."""
    taxonomy = load_taxonomy()
    out = sica_outputs(deriv, run)
    maps = np.asarray(nib.load(out["maps"]).dataobj)
    mask = np.abs(maps).sum(-1) > 0
    truth, labels = true_network_maps(bids, mask, subject=subject)
    r = spatial_correlation(maps[mask].T, truth)  # (components, networks)
    best = r.argmax(1)
    best_r = r[np.arange(len(r)), best]
    table = pd.read_csv(out["labels"], sep="\t")
    network = best_r >= 0.5
    none = best_r < 0.3
    true_label = labels[best]
    true_net = np.array([taxonomy.parent(lab) for lab in true_label])
    said_nothing = table["label"].isin([NOISE, UNKNOWN]).to_numpy() | table["abstained"].to_numpy(bool)
    return {
        "components": len(r),
        "networks_recovered_median_r": float(np.median(r.max(0))),
        "networks_recovered_at_0.5": int((r.max(0) >= 0.5).sum()),
        "network_components": int(network.sum()),
        "right_network": int((table["network"].to_numpy()[network] == true_net[network]).sum()),
        "right_label": int((table["label"].to_numpy()[network] == true_label[network]).sum()),
        "no_network_components": int(none.sum()),
        "no_network_said_nothing": int(said_nothing[none].sum()),
    }


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("deriv")
    ap.add_argument("bids")
    ap.add_argument("model")
    ap.add_argument("--participants", nargs="*", default=None)
    ap.add_argument("--order", default="auto")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if main(["subject-ica", args.deriv, "--order", args.order]) != EXIT_OK:
        raise SystemExit("subject-ica failed")
    t_sica = time.perf_counter() - t0
    if main(["classify", args.deriv, "--model", args.model, "--maps", "sica"]) != EXIT_OK:
        raise SystemExit("classify failed")
    runs = preprocessed_runs(args.deriv)
    runs = [r for r in runs if not args.participants or r.subject in args.participants]
    rows = [{"run": str(run), **score_run(args.deriv, args.bids, run, run.subject)} for run in runs]
    frame = pd.DataFrame(rows)
    print(frame.to_markdown(index=False))
    total = frame.sum(numeric_only=True)
    print(
        f"\n{len(frame)} runs, subject-ica {t_sica:.0f} s for all runs; components "
        f"{int(frame['components'].min())}-{int(frame['components'].max())} per run; true networks recovered "
        f"at r >= 0.5: median {frame['networks_recovered_at_0.5'].median():.0f} of 56"
    )
    n_net = total["network_components"]
    print(
        f"components that are a network: right network {total['right_network'] / n_net:.3f}, "
        f"right label {total['right_label'] / n_net:.3f} ({int(n_net)} components)"
    )
    print(
        "components that are no network: Noise, Unknown or abstained "
        f"{total['no_network_said_nothing'] / total['no_network_components']:.3f} "
        f"({int(total['no_network_components'])} components)"
    )


if __name__ == "__main__":
    main_bench()
