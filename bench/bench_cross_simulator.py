"""Cross-simulator scores: a classifier trained on rsnflow's simulator, tested on a cohort it never saw.

Cohort B is written by ``bench/second_simulator.py`` (its own anatomy, network,
noise and acquisition models), then rsnflow preprocesses it, runs its group
ICA (order 100), dual regression and automatic labels, and ``rsnflow classify``
labels every (subject, component) map with ``MODEL`` (trained on rsnflow's own
simulator: give it, or let the bench build cohort A with ``rsnflow simulate
--profile demo`` and train an MLP on it).

Truth per group component: the network whose true map (smoothed 7 mm like the
data; a network the generator made whole is one map) it matches at r >= 0.5,
none below 0.3. Scores:

- network accuracy: components that match a true network given that network
  (abstentions count as wrong);
- noise rejection: components that match none labelled Noise or Unknown, or abstained;
- ECE of the network-level answers given (abstentions excluded; confidence:
  the network probability; right: the true network, or Noise or Unknown for a
  component of none);

for the classifier and, beside it, rsnflow's automatic template labeller.

Usage::

    python bench/bench_cross_simulator.py WORK [--model MODEL_DIR --dataset ITS_DATASET] [--subjects 12]
    python bench/bench_cross_simulator.py WORK --varied 2
    python bench/bench_cross_simulator.py WORK --node-shift 6 --model MODEL_DIR --dataset ITS_DATASET

``--varied N`` trains the MLP on cohort A pooled with N cohorts of rsnflow's
simulator under domain randomisation (``rsnflow simulate --vary``: TR, voxel
size, whole networks, amplitudes, noise models; model orders 100 and 40 in
turn) instead of A alone.

With ``--dataset`` (implied when the bench trains the model) it also scores the
served answers on that dataset's test split: accuracy, share abstained, ECE.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from rsnflow.atlas import NOISE, UNKNOWN, load_taxonomy
from rsnflow.cli import EXIT_OK, main
from rsnflow.evaluate.metrics import calibration_error
from rsnflow.ica.group import preprocessed_runs
from rsnflow.ica.matching import spatial_correlation
from rsnflow.layout import dr_outputs, group_paths
from rsnflow.preprocess.smoothing import smooth_in_mask
from rsnflow.simulate.truth import mean_true_maps
from rsnflow.space import MNI4_SHAPE, unmask

sys.path.insert(0, str(Path(__file__).parent))
import second_simulator

#: The ``rsnflow classify`` options the benchmark passes on when given, with their metavars.
_CLASSIFY_FLAGS = (
    ("--atypical-below", "R"),
    ("--group-weight", "W"),
    ("--group-atypical-below", "R"),
    ("--group-network-below", "R"),
)


def _cli(*argv: str) -> float:
    t0 = time.perf_counter()
    if main(list(argv)) != EXIT_OK:
        raise SystemExit(f"rsnflow {' '.join(argv)} failed")
    return time.perf_counter() - t0


def decompose(bids: Path, deriv: Path, n_jobs: int, order: int = 100) -> dict[str, float]:
    """Preprocess, group ICA, dual regression and automatic labels; seconds per stage."""
    return {
        "preprocess": _cli("preprocess", str(bids), str(deriv), "--n-jobs", str(n_jobs)),
        "group-ica": _cli("group-ica", str(deriv), "--order", str(order)),
        "dual-regression": _cli("dual-regression", str(deriv), "--n-jobs", str(n_jobs)),
        "label": _cli("label", str(deriv)),
    }


def train_model(work: Path, n_jobs: int, epochs: int) -> Path:
    """Cohort A from rsnflow's own simulator (demo profile, seed 0) and an MLP trained on it."""
    a = work / "A"
    model = a / "models" / "mlp"
    if (model / "model.json").exists():
        return model
    if not (a / "bids" / "participants.tsv").exists():
        _cli("simulate", str(a / "bids"), "--profile", "demo", "--seed", "0", "--n-jobs", str(n_jobs))
    decompose(a / "bids", a / "deriv", n_jobs)
    _cli("dataset", str(a / "deriv"), str(a / "dataset"))
    _cli("train", str(a / "dataset"), str(model), "--arch", "mlp", "--epochs", str(epochs), "--no-tracking")
    return model


def pooled_model(
    work: Path, n_varied: int, n_jobs: int, epochs: int, by_truth: bool = False
) -> tuple[Path, Path]:
    """Cohort A pooled with ``n_varied`` varied cohorts of rsnflow's simulator, and an MLP trained on it.

    Cohort ``A<i+1>`` is ``rsnflow --seed i simulate --profile demo --vary``
    decomposed at model order 100 (i odd) or 40 (i even); ``P<N>/dataset`` pools
    A and them (``rsnflow dataset A/deriv A2/deriv ... P<N>/dataset``). With
    ``by_truth`` the varied cohorts are labelled by their truth (:func:`truth_labels`),
    not by rsnflow's template labeller, into ``P<N>t``.
    """
    derivs = [work / "A" / "deriv"]
    for i in range(1, n_varied + 1):
        c = work / f"A{i + 1}"
        if not (c / "bids" / "participants.tsv").exists():
            argv = ["--seed", str(i), "simulate", str(c / "bids"), "--profile", "demo", "--vary"]
            _cli(*argv, "--n-jobs", str(n_jobs))
        if not group_paths(c / "deriv")["labels"].exists():
            decompose(c / "bids", c / "deriv", n_jobs, order=100 if i % 2 else 40)
        derivs.append(c / "deriv")
    p = work / f"P{n_varied}{'t' if by_truth else ''}"
    if not (p / "dataset" / "manifest.json").exists():
        for i in range(1, n_varied + 1):  # the labels this pool is built from, whichever were there
            c = work / f"A{i + 1}"
            expert = ["--expert-labels", str(truth_labels(c / "bids", c / "deriv", c / "truth_labels.tsv"))]
            _cli("label", str(c / "deriv"), *(expert if by_truth else []))
        _cli("dataset", *map(str, derivs), str(p / "dataset"))
    model = p / "models" / "mlp"
    if not (model / "model.json").exists():
        _cli(
            "train", str(p / "dataset"), str(model), "--arch", "mlp", "--epochs", str(epochs), "--no-tracking"
        )
    return model, p / "dataset"


def _whole_networks(bids: Path) -> set[str]:
    """The networks made whole: in the second generator's ``design.json`` or rsnflow's ``variation.json``."""
    gt = bids / "derivatives" / "groundtruth"
    for name in ("design.json", "variation.json"):
        if (gt / name).exists():
            return set(json.loads((gt / name).read_text()).get("whole_networks", []))
    return set()


def source_truth(bids: Path, zmaps: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    """Each component's true network (or Noise below r 0.3, Unknown at 0.3-0.5), its r and sub-network.

    The true maps are smoothed 7 mm like the data; the sub-networks of a network the
    generator made whole (one time course) are one map, and ``true_label`` is then
    the sub-network whose own map the component matches best.
    """
    maps, sources = mean_true_maps(bids, mask)
    whole = _whole_networks(bids)
    net = sources[sources["kind"] == "network"]
    groups = [[i] for i, p in zip(net.index, net["network"], strict=True) if p not in whole]
    groups += [list(net.index[net["network"] == p]) for p in sorted(whole)]
    truth = np.stack([maps[g].sum(0) for g in groups] + [maps[i] for i in net.index]).astype(np.float32)
    smooth = smooth_in_mask(unmask(truth, mask), np.ones(MNI4_SHAPE, bool), (4, 4, 4), 7.0)[mask].T
    parents = np.array([net.loc[g[0], "network"] for g in groups])
    r_all = spatial_correlation(zmaps, smooth)
    r, r_sub = r_all[:, : len(groups)], r_all[:, len(groups) :]
    best = r.argmax(1)
    best_r = r[np.arange(len(r)), best]
    label = np.where(best_r >= 0.5, parents[best], np.where(best_r >= 0.3, UNKNOWN, NOISE))
    column = {i: k for k, i in enumerate(net.index)}  # a source's column in r_sub

    def closest(c: int, members: list[int]) -> str:
        return str(net.loc[max(members, key=lambda i: r_sub[c, column[i]]), "label"])

    sub = [
        lab if lab in (NOISE, UNKNOWN) else closest(c, groups[b])
        for c, (b, lab) in enumerate(zip(best, label, strict=True))
    ]
    return pd.DataFrame(
        {"component": np.arange(len(r)), "true_network": label, "true_r": best_r, "true_label": sub}
    )


def truth_labels(bids: Path, deriv: Path, out: Path) -> Path:
    """A simulated cohort's group components labelled by its truth, as an expert label file.

    What a perfect expert would say (``rsnflow label DERIV --expert-labels``):
    training on it instead of rsnflow's template labels tests whether the
    classifier can learn more than the template labeller knows.
    """
    g = group_paths(deriv)
    mask = np.asarray(nib.load(g["mask"]).dataobj) > 0
    zmaps = np.asarray(nib.load(g["maps"]).dataobj, dtype=np.float32)[mask].T
    truth = source_truth(bids, zmaps, mask)
    table = truth[["component", "true_label"]].rename(columns={"true_label": "label"})
    table.to_csv(out, sep="\t", index=False)
    return out


def score(deriv: Path, bids: Path) -> dict[str, float]:
    """The classifier's and the template labeller's scores against cohort B's truth."""
    tax = load_taxonomy()
    g = group_paths(deriv)
    mask = np.asarray(nib.load(g["mask"]).dataobj) > 0
    zmaps = np.asarray(nib.load(g["maps"]).dataobj, dtype=np.float32)[mask].T
    truth = source_truth(bids, zmaps, mask)
    true_net = truth["true_network"].to_numpy()
    is_net = ~np.isin(true_net, [NOISE, UNKNOWN])
    none = true_net == NOISE
    tables = [pd.read_csv(dr_outputs(deriv, run)["labels"], sep="\t") for run in preprocessed_runs(deriv)]
    rows = pd.concat(tables, ignore_index=True)
    comp = rows["component"].to_numpy()
    quiet = rows["label"].isin([NOISE, UNKNOWN]).to_numpy() | rows["abstained"].to_numpy(bool)
    said_net = np.where(quiet, NOISE, rows["network"].to_numpy())
    right = said_net == np.where(is_net, true_net, NOISE)[comp]
    # ECE of the answers given (abstentions say nothing), on components that are clearly
    # a network or clearly none
    answered = ~rows["abstained"].to_numpy(bool) & (is_net | none)[comp]
    conf = rows["network_probability"].to_numpy(float)
    template = pd.read_csv(g["labels"], sep="\t")["label"].to_numpy()
    t_net = np.array([NOISE if lab in (NOISE, UNKNOWN) else tax.parent(lab) for lab in template])
    return {
        "components": len(truth),
        "network_components": int(is_net.sum()),
        "no_network_components": int(none.sum()),
        "networks_recovered": len(set(true_net[is_net])),
        "classifier_network_accuracy": float(right[is_net[comp]].mean()),
        "classifier_noise_rejection": float(quiet[none[comp]].mean()),
        "classifier_ece": calibration_error(conf[answered], right[answered]),
        "classifier_abstained": float(rows["abstained"].to_numpy(bool).mean()),
        "template_network_accuracy": float((t_net == true_net)[is_net].mean()),
        "template_noise_rejection": float((t_net == NOISE)[none].mean()),
    }


def in_distribution(model: Path, dataset: Path) -> dict[str, float]:
    """The served answers on the training decomposition's own test split: accuracy, abstentions."""
    from rsnflow.dataset import MapDataset
    from rsnflow.serve.predictor import RSNPredictor

    ds = MapDataset(dataset, "test")
    maps = np.asarray(ds._array()[ds._rows], dtype=np.float32)
    predictor = RSNPredictor("b", str(model))
    predictor.load()
    probs, typical = predictor.scores(maps)
    ranked = predictor.rank(probs, typical)
    classes = np.asarray(predictor.classes_, dtype=object)
    truth = classes[ds.targets.numpy()]
    best = classes[probs.argmax(1)]
    kept = ~ranked["abstained"]
    return {
        "test_accuracy": float((best == truth).mean()),
        "test_abstained": float((~kept).mean()),
        "test_accuracy_answered": float((best == truth)[kept].mean()),
        "test_ece": calibration_error(probs.max(1), best == truth),
    }


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path)
    ap.add_argument(
        "--model", type=Path, default=None, help="trained on rsnflow's simulator (default: build)"
    )
    ap.add_argument("--subjects", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--node-shift", type=float, default=0.0, metavar="MM",
        help="cohort B's network nodes this far from the atlas (second_simulator.py --node-shift)",
    )  # fmt: skip
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--dataset", type=Path, default=None, help="the model's dataset: its test split too")
    for flag, metavar in _CLASSIFY_FLAGS:
        ap.add_argument(
            flag,
            type=float,
            default=None,
            metavar=metavar,
            help=f"rsnflow classify {flag} (default: its own)",
        )
    ap.add_argument(
        "--varied",
        type=int,
        default=0,
        metavar="N",
        help="train on cohort A pooled with N varied cohorts of rsnflow's simulator (domain randomisation)",
    )
    ap.add_argument(
        "--truth-labels", action="store_true",
        help="with --varied: label the varied cohorts by their truth, not by rsnflow's template labeller",
    )  # fmt: skip
    args = ap.parse_args()
    model = args.model or train_model(args.work, args.n_jobs, args.epochs)
    if args.model is None:
        args.dataset = args.work / "A" / "dataset"
        if args.varied:
            model, args.dataset = pooled_model(
                args.work, args.varied, args.n_jobs, args.epochs, args.truth_labels
            )
    b = args.work / "B"
    times: dict[str, float] = {}
    if not (b / "bids" / "participants.tsv").exists():
        t0 = time.perf_counter()
        second_simulator.simulate(b / "bids", args.subjects, args.seed, args.n_jobs, args.node_shift)
        times["simulate"] = time.perf_counter() - t0
    if not group_paths(b / "deriv")["labels"].exists():
        times.update(decompose(b / "bids", b / "deriv", args.n_jobs))
    flags = [  # the classify flags given
        arg
        for flag, _ in _CLASSIFY_FLAGS
        if (value := getattr(args, flag[2:].replace("-", "_"))) is not None
        for arg in (flag, str(value))
    ]
    times["classify"] = _cli("classify", str(b / "deriv"), "--model", str(model), *flags)
    scores = score(b / "deriv", b / "bids")
    if args.dataset is not None:
        scores.update(in_distribution(model, args.dataset))
    print(pd.Series(scores).to_string())
    print("seconds:", {k: round(v) for k, v in times.items()})


if __name__ == "__main__":
    main_bench()
