"""The ``rsnflow`` command line: one subcommand per stage, thin over the library.

Exit status: 0 success; 1 an error (bad input, bad configuration, a failed
stage); 2 a usage error or a stage that is not available yet; 3 the stage
finished but some subjects failed and were skipped (listed in the log and in
the stage's summary).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from rsnflow import __version__
from rsnflow.config import ARCHS

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_PARTIAL", "build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1  # argparse exits with 2 on a usage error
EXIT_PARTIAL = 3


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS keeps a value given before the subcommand from being reset by
    # the subparser's default when it is not repeated after it.
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common options")
    g.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="YAML file overriding the defaults (see `rsnflow config show`)",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=argparse.SUPPRESS,
        help="seed of every random step (default: config `seed`)",
    )
    g.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default=argparse.SUPPRESS,
        help="torch device (default: config `device`, auto = cuda when present)",
    )
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="more log output (-vv for debug)",
    )
    g.add_argument("-q", "--quiet", action="count", default=argparse.SUPPRESS, help="less log output")
    return common


def _bids_selection(p: argparse.ArgumentParser) -> None:
    """The run-selection options fMRIPrep users type: labels, task, a BIDS filter file."""
    p.add_argument("--participant-label", nargs="+", default=None, metavar="LABEL")
    p.add_argument("--session-label", nargs="+", default=None, metavar="LABEL")
    p.add_argument("--task", default="rest", help="task label of the runs to process (default rest)")
    p.add_argument(
        "--bids-filter-file",
        type=Path,
        default=None,
        metavar="FILE",
        help='JSON as fMRIPrep reads it: {"bold": {"session": "2", "run": 1, "acquisition": null}}',
    )


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    from rsnflow.bids import read_filter_file

    return {
        "session_label": args.session_label,
        "task": args.task,
        "bids_filter": read_filter_file(args.bids_filter_file) if args.bids_filter_file else None,
    }


def _no_recompute(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-recompute",
        dest="recompute",
        action="store_false",
        help="stop with an error, naming the file, when existing outputs were made from other inputs "
        "or settings (default: redo them)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rsnflow`` (all subcommands of shared/DESIGN.md).

    Returns
    -------
    argparse.ArgumentParser
        The top-level parser, with the common options (``--config``, ``--seed``,
        ``--device``, ``-v``, ``-q``) and one required subcommand.
    """
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="rsnflow",
        description="Resting-state fMRI from raw BOLD to labelled networks and a served classifier.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"rsnflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, parents=[common])

    _add_data_commands(add)
    _add_model_commands(add)
    _add_classify_command(add)
    _add_run_command(add)
    _add_pipeline_commands(add, common)
    return parser


def _add_data_commands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """simulate, preprocess, group-ica, dual-regression, label, dataset."""
    p = add("simulate", "write a simulated BIDS cohort with ground truth")
    p.add_argument("out_bids_dir", type=Path, metavar="OUT_BIDS_DIR")
    p.add_argument("--profile", choices=["tiny", "demo", "beijing", "multiband"], default=None)
    p.add_argument("--subjects", type=int, default=None, help="override the profile's subject count")
    p.add_argument(
        "--bad-subjects",
        nargs="*",
        default=[],
        metavar="KIND",
        help="append bad subjects: truncated, nan, 3d, no-tr, short (for reliability tests)",
    )
    p.add_argument("--volumes", type=int, default=None, help="override the profile's volumes per run")
    p.add_argument("--n-jobs", dest="sim_jobs", type=int, default=1, help="subjects simulated in parallel")
    p.add_argument(
        "--vary",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="domain randomisation: draw the TR, voxel size, whole networks and node positions of the "
        "cohort, and each subject's amplitudes and noise models, from the seed (the run keeps its length in "
        "seconds: --volumes times the profile's TR)",
    )
    p.add_argument(
        "--figures",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write PNG figures of the first subject into DIR",
    )

    p = add("preprocess", "motion correction, smoothing, high-pass, registration to MNI 4 mm")
    p.add_argument("bids_dir", type=Path, metavar="BIDS_DIR")
    p.add_argument("deriv_dir", type=Path, metavar="DERIV_DIR")
    _bids_selection(p)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--force", action="store_true", help="redo runs whose outputs are complete")
    _no_recompute(p)

    p = add("group-ica", "group ICA by MIGP and FastICA")
    p.add_argument("deriv_dir", type=Path, metavar="DERIV_DIR")
    p.add_argument("--order", default=None, help="model order (default 100) or 'auto'")

    p = add("dual-regression", "subject maps and time courses from the group maps")
    p.add_argument("deriv_dir", type=Path, metavar="DERIV_DIR")
    p.add_argument(
        "--group-maps", default=None, metavar="MODEL",
        help="regress onto the reference maps a model was trained on (model directory or models:/ URI) "
        "instead of this cohort's own group ICA",
    )  # fmt: skip
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for models:/ URIs")
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--force", action="store_true", help="redo subjects whose outputs are complete")
    _no_recompute(p)

    p = add("subject-ica", "single-run ICA of every preprocessed run (MELODIC per session), no group maps")
    p.add_argument("deriv_dir", type=Path, metavar="DERIV_DIR")
    p.add_argument(
        "--order", dest="sica_order", default="auto", help="components per run, or 'auto' (the default)"
    )
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--force", action="store_true", help="redo runs whose outputs are complete")

    p = add("label", "label the group components as resting-state networks")
    p.add_argument("deriv_dir", type=Path, metavar="DERIV_DIR")
    p.add_argument("--expert-labels", type=Path, default=None, metavar="FILE.tsv")

    p = add("dataset", "build the classification dataset of subject maps")
    p.add_argument(
        "deriv_dir", type=Path, nargs="+", metavar="DERIV_DIR",
        help="derivatives with dual regression and labels; several cohorts (each decomposed on its own) "
        "are pooled, their subjects named c<n>-<label>",
    )  # fmt: skip
    p.add_argument("dataset_dir", type=Path, metavar="DATASET_DIR")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an rsnflow dataset already in DATASET_DIR"
    )


def _add_classify_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """classify and predict: a trained model (or a server) labels a cohort's maps, or a file's."""
    p = add("classify", "label every run's component maps with a trained classifier")
    p.add_argument("deriv_dir", type=Path, metavar="DERIV_DIR")
    p.add_argument(
        "--maps", choices=["dr", "sica"], default="dr",
        help="the runs' dual-regression maps (dr, default) or their own single-run ICA (sica, subject-ica)",
    )  # fmt: skip
    p.add_argument(
        "--model", required=True, metavar="MODEL",
        help="model directory, models:/NAME@champion, or a server's URL (rsnflow serve, a KServe endpoint)",
    )  # fmt: skip
    p.add_argument(
        "--abstain-below", type=float, default=None, metavar="P",
        help="label Unknown below this probability (default: the model's calibrated threshold)",
    )  # fmt: skip
    p.add_argument(
        "--atypical-below", type=float, default=None, metavar="R",
        help="withhold a network label below this correlation with its class's prototype "
        "(0: never; default: the model's floor for maps labelled alone, none where the group map "
        "weighs in)",
    )  # fmt: skip
    p.add_argument(
        "--group-weight", type=float, default=None, metavar="W",
        help="weigh each dual-regression map's group map in, its probabilities to this power "
        "(0: each map alone; default: config serve.group_weight)",
    )  # fmt: skip
    p.add_argument(
        "--group-atypical-below", type=float, default=None, metavar="R",
        help="a group map correlating less than this with its best network label's prototype has no "
        "say (0: every group map has; default: config serve.group_atypical_below)",
    )  # fmt: skip
    p.add_argument(
        "--group-network-below", type=float, default=None, metavar="R",
        help="a component whose group map correlates less than this with every network's prototype "
        "gets no network label (0: never; default: config serve.group_network_below)",
    )  # fmt: skip
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for models:/ URIs")

    p = add("predict", "label a NIfTI file of maps (3D, or a 4D stack) with a served classifier")
    p.add_argument("maps", type=Path, metavar="MAPS.nii.gz")
    p.add_argument(
        "--url", required=True, help="the server (http://HOST:PORT) or its /v2/models/NAME/infer URL"
    )
    p.add_argument(
        "--name", default="rsn-classifier", help="model name on the server (default rsn-classifier)"
    )
    p.add_argument(
        "--out", type=Path, default=None, metavar="FILE.tsv", help="write the table (default: print)"
    )


def _add_model_commands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """train, evaluate, serve."""
    p = add("train", "train one classifier")
    p.add_argument("dataset_dir", type=Path, metavar="DATASET_DIR")
    p.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    p.add_argument("--arch", choices=list(ARCHS), required=True)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument(
        "--max-train-samples",
        type=int,
        default=None,
        metavar="N",
        help="train on a seeded random subset of N training maps",
    )
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="FILE",
        help="local file of pretrained weights (state_dict); nothing is downloaded",
    )
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: config, then local SQLite)"
    )
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument(
        "--verify",
        choices=["fast", "full", "none"],
        default="fast",
        help="check the dataset against its manifest's SHA-256 first: fast (sizes, small files, 16 blocks "
        "of the maps), full (every byte) or none (default fast)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from MODEL_DIR's checkpoint of the same run, if any"
    )

    p = add("evaluate", "compare trained classifiers (Table 1)")
    p.add_argument("dataset_dir", type=Path, metavar="DATASET_DIR")
    p.add_argument("model_dirs", type=Path, nargs="+", metavar="MODEL_DIR")
    p.add_argument("--out", type=Path, required=True, metavar="REPORT_DIR")
    p.add_argument(
        "--cross-dataset",
        type=Path,
        default=None,
        metavar="DATASET_DIR",
        help="dataset of an independently decomposed cohort, classified as a whole",
    )
    p.add_argument(
        "--max-maps", type=int, default=None, metavar="N", help="evaluate at most N maps per split"
    )
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: where each model was tracked)"
    )
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow or set the alias")

    p = add("serve", "serve a classifier with KServe (V1 and V2 protocols)")
    p.add_argument(
        "model", metavar="MODEL_URI_OR_DIR", help="model directory or MLflow URI, e.g. models:/NAME@champion"
    )
    p.add_argument("--port", type=int, default=None, help="HTTP port (default 8080)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1; 0.0.0.0 in a pod)")
    p.add_argument("--name", default=None, help="model name in the URLs (default rsn-classifier)")
    p.add_argument("--max-request-mb", type=float, default=None, help="HTTP 413 above this body size")
    p.add_argument("--max-batch", type=int, default=None, help="most maps per request")
    p.add_argument(
        "--abstain-below", type=float, default=None, metavar="P", help="label Unknown below this probability"
    )
    p.add_argument(
        "--atypical-below", type=float, default=None, metavar="R",
        help="withhold a network label below this correlation with its class's prototype "
        "(0: never; default: the model's floor)",
    )  # fmt: skip
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI for models:/ URIs (default $MLFLOW_TRACKING_URI)",
    )


def _add_run_command(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """run: the training pipeline, or with --label-only the label-cohort pipeline, through kfp.local."""
    p = add(
        "run", "run the whole KFP pipeline locally (kfp.local) on a BIDS folder, s3:// or a simulated cohort"
    )
    p.add_argument(
        "cohort",
        nargs="?",
        default=None,
        metavar="BIDS_DIR|s3://BUCKET/PREFIX",
        help="the cohort (default: a simulated one, sim://PROFILE)",
    )
    p.add_argument("--profile", choices=["tiny", "demo", "beijing", "multiband"], default=None)
    p.add_argument("--subjects", type=int, default=None)
    p.add_argument("--work-dir", type=Path, default=Path("work"), metavar="DIR")
    p.add_argument("--expert-labels", type=Path, default=None, metavar="FILE.tsv")
    p.add_argument(
        "--label-only", default=None, metavar="MODEL",
        help="run the label-cohort pipeline instead: regress the cohort onto MODEL's reference maps and "
        "label it with MODEL (a models:/ URI or a model directory); nothing is trained",
    )  # fmt: skip
    p.add_argument(
        "--endpoint", default=None, metavar="URL",
        help="with --label-only: classify through this server (rsnflow serve, an InferenceService)",
    )  # fmt: skip


def _add_pipeline_commands(
    add: Callable[[str, str], argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """pipeline, bids, cohort, config."""
    p = add("pipeline", "the Kubeflow pipeline: compile, submit, schedule")
    psub = p.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    pc = psub.add_parser("compile", help="write the pipeline IR YAML", parents=[common])
    pc.add_argument("out", type=Path, nargs="?", default=None, metavar="OUT.yaml")
    pc.add_argument(
        "--pipeline", choices=["rsnflow", "label-cohort"], default="rsnflow",
        help="rsnflow: the whole training pipeline (default, build/rsn_pipeline.yaml); label-cohort: label a "
        "new cohort with the champion (build/label_cohort_pipeline.yaml)",
    )  # fmt: skip
    for action, help_ in (
        ("submit", "start a run on a KFP endpoint"),
        ("schedule", "create a recurring run that processes new cohorts"),
    ):
        ps = psub.add_parser(action, help=help_, parents=[common])
        ps.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow")
        ps.add_argument("--package", type=Path, default=Path("build/rsn_pipeline.yaml"), metavar="YAML")
        ps.add_argument("--experiment", default="rsnflow")
        ps.add_argument("--namespace", default=None)
        ps.add_argument(
            "--arg",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="pipeline argument (repeatable; VALUE parsed as YAML)",
        )
        if action == "schedule":
            ps.add_argument("--watch", required=True, metavar="s3://BUCKET/PREFIX")
            ps.add_argument(
                "--cron", default="0 0 2 * * *", help="six fields, seconds first (default: 02:00 daily)"
            )

    p = add(
        "bids",
        "BIDS-Apps entry point: participant = preprocessing; group = group ICA, dual regression, labels",
    )
    p.add_argument("bids_dir", type=Path, metavar="BIDS_DIR")
    p.add_argument("output_dir", type=Path, metavar="OUTPUT_DIR")
    p.add_argument("analysis_level", choices=["participant", "group"])
    _bids_selection(p)
    p.add_argument(
        "--work-dir", type=Path, default=None, metavar="DIR", help="accepted for BIDS-Apps callers; unused"
    )
    p.add_argument("--nprocs", "--n-jobs", dest="n_jobs", type=int, default=None, help="processes")
    p.add_argument("--expert-labels", type=Path, default=None, metavar="FILE.tsv")
    p.add_argument("--order", default=None, help="group ICA model order (default 100) or 'auto'")

    p = add("cohort", "cohorts in an object store: upload one (marker last), list a watched prefix")
    csub = p.add_subparsers(dest="cohort_command", metavar="ACTION", required=True)
    cu = csub.add_parser(
        "upload", help="upload a BIDS folder with checksums, the completion marker last", parents=[common]
    )
    cu.add_argument("bids_dir", type=Path, metavar="BIDS_DIR")
    cu.add_argument("uri", metavar="s3://BUCKET/PREFIX/NAME")
    cl = csub.add_parser("list", help="the cohorts under a watched prefix and their state", parents=[common])
    cl.add_argument("uri", metavar="s3://BUCKET/PREFIX")

    p = add("config", "show the effective configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    csub.add_parser("show", help="print the effective configuration as YAML", parents=[common])


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "seed", None) is not None:
        out["seed"] = args.seed
    if getattr(args, "device", None) is not None:
        out["device"] = args.device
    if getattr(args, "profile", None) is not None:
        out.setdefault("simulate", {})["profile"] = args.profile
    if getattr(args, "subjects", None) is not None:
        out.setdefault("simulate", {})["subjects"] = args.subjects
    if getattr(args, "vary", None) is not None:
        out.setdefault("simulate", {})["vary"] = args.vary
    if getattr(args, "n_jobs", None) is not None:
        out.setdefault("preprocess", {})["n_jobs"] = args.n_jobs
    if getattr(args, "epochs", None) is not None:
        out.setdefault("train", {})["epochs"] = args.epochs
    if getattr(args, "order", None) is not None:
        order = args.order
        out.setdefault("ica", {})["order"] = int(order) if str(order).isdigit() else order
    if getattr(args, "max_maps", None) is not None:
        out.setdefault("evaluate", {})["max_maps_per_split"] = args.max_maps
    if getattr(args, "tracking_uri", None) is not None:
        out.setdefault("tracking", {})["uri"] = args.tracking_uri
    if args.command in ("serve", "classify"):  # classify checks its thresholds as serve does
        keys = ("port", "host", "name", "max_request_mb", "max_batch", "abstain_below", "atypical_below")
        for key in (*keys, "group_weight", "group_atypical_below", "group_network_below"):
            if getattr(args, key, None) is not None:
                out.setdefault("serve", {})[key] = getattr(args, key)
    return out


# ---------------------------------------------------------------------------- handlers


def _cmd_config(args: argparse.Namespace, config: Any) -> int:
    from rsnflow.config import config_to_dict

    sys.stdout.write(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return EXIT_OK


def _cmd_simulate(args: argparse.Namespace, config: Any) -> int:
    from rsnflow.simulate import simulate_cohort

    result = simulate_cohort(
        args.out_bids_dir,
        profile=config.simulate.profile,
        seed=config.seed,
        n_subjects=config.simulate.subjects,
        bad_subjects=args.bad_subjects,
        n_jobs=args.sim_jobs,
        n_volumes=args.volumes,
        vary=config.simulate.vary,
    )
    if args.figures is not None:
        from rsnflow.simulate.figures import write_subject_figures

        write_subject_figures(args.out_bids_dir, result.subjects[0], args.figures)
    print(f"wrote {len(result.subjects)} subjects to {args.out_bids_dir}")
    print(f"ground truth: {result.groundtruth_dir}")
    return EXIT_OK


def _cmd_preprocess(args: argparse.Namespace, config: Any) -> int:
    from rsnflow.layout import group_paths, preprocess_summary_path
    from rsnflow.preprocess import preprocess_cohort

    result = preprocess_cohort(
        args.bids_dir,
        args.deriv_dir,
        config.preprocess,
        args.participant_label,
        config.device,
        args.force,
        recompute=args.recompute,
        **_selection(args),
    )
    print(f"preprocessed {len(result.succeeded)} runs into {args.deriv_dir}")
    print(f"summary: {preprocess_summary_path(args.deriv_dir)}")
    if group_paths(args.deriv_dir)["qc_report"].is_file():
        print(f"cohort QC (outliers flagged): {group_paths(args.deriv_dir)['qc_report']}")
    if result.failed:
        print(f"failed: {', '.join(result.failed)} (reasons in the summary)", file=sys.stderr)
        return EXIT_ERROR if not result.succeeded else EXIT_PARTIAL
    return EXIT_OK


def _cmd_group_ica(args: argparse.Namespace, config: Any) -> int:
    from rsnflow.ica import group_ica
    from rsnflow.layout import group_paths

    result = group_ica(args.deriv_dir, config.ica, seed=config.seed, device=config.device)
    paths = group_paths(args.deriv_dir)
    print(f"group ICA of {len(result.subjects)} subjects, order {result.order}: {paths['maps']}")
    print(f"report: {paths['report']}")
    return EXIT_OK


def _cmd_dual_regression(args: argparse.Namespace, config: Any) -> int:
    from rsnflow.ica import dual_regression_cohort
    from rsnflow.layout import group_paths

    if args.group_maps is not None:
        import os
        import tempfile

        from rsnflow.reference import fetch_reference, import_reference

        if config.tracking.uri:  # for a models:/ URI
            os.environ["MLFLOW_TRACKING_URI"] = config.tracking.uri
        with tempfile.TemporaryDirectory(prefix="rsnflow-reference-") as tmp:
            written = import_reference(args.deriv_dir, fetch_reference(args.group_maps, tmp))
        state = "imported" if written else "already there"
        print(f"group maps: the reference maps of {args.group_maps} ({state})")
    result = dual_regression_cohort(
        args.deriv_dir,
        config.dual_regression.des_norm,
        config.preprocess.n_jobs,
        args.force,
        recompute=args.recompute,
    )
    print(f"dual regression: {int((result.summary['status'] != 'failed').sum())} subjects done")
    if result.failed:
        print(
            f"failed: {', '.join(result.failed)} (reasons in {group_paths(args.deriv_dir)['dr_summary']})",
            file=sys.stderr,
        )
        return EXIT_ERROR if len(result.failed) == len(result.summary) else EXIT_PARTIAL
    return EXIT_OK


def _cmd_subject_ica(args: argparse.Namespace, config: Any) -> int:
    from rsnflow.config import ConfigError
    from rsnflow.ica.subject_ica import subject_ica_cohort
    from rsnflow.layout import group_paths

    order = args.sica_order
    if order != "auto":
        if not str(order).isdigit() or int(order) < 1:
            raise ConfigError(f"--order: expected a positive integer or 'auto', got {order!r}")
        order = int(order)
    result = subject_ica_cohort(args.deriv_dir, order, config.seed, config.preprocess.n_jobs, args.force)
    summary = group_paths(args.deriv_dir)["sica_summary"]
    print(f"single-run ICA: {int((result.summary['status'] != 'failed').sum())} runs done; summary {summary}")
    if result.failed:
        print(f"failed: {', '.join(result.failed)} (reasons in {summary})", file=sys.stderr)
        return EXIT_ERROR if len(result.failed) == len(result.summary) else EXIT_PARTIAL
    return EXIT_OK


def _cmd_label(args: argparse.Namespace, config: Any) -> int:
    from rsnflow.atlas import NOISE, UNKNOWN
    from rsnflow.labeling import label_components, labels_path
    from rsnflow.layout import group_paths

    table = label_components(args.deriv_dir, config.labeling, args.expert_labels)
    n_noise = int((table["label"] == NOISE).sum())
    n_unknown = int((table["label"] == UNKNOWN).sum())
    print(
        f"labelled {len(table)} components ({table['source'].iloc[0]}): "
        f"{len(table) - n_noise - n_unknown} networks, {n_noise} Noise, {n_unknown} Unknown"
    )
    print(f"labels: {labels_path(args.deriv_dir)}")
    print(f"review page: {group_paths(args.deriv_dir)['labels_report']}")
    return EXIT_OK


def _cmd_classify(args: argparse.Namespace, config: Any) -> int:
    import os

    from rsnflow.classify import classify_runs
    from rsnflow.layout import group_paths

    if config.tracking.uri:  # for a models:/ URI
        os.environ["MLFLOW_TRACKING_URI"] = config.tracking.uri
    summary = classify_runs(
        args.deriv_dir,
        args.model,
        config.serve.abstain_below,
        config.device,
        maps=args.maps,
        atypical_below=config.serve.atypical_below,
        group_weight=config.serve.group_weight,
        group_atypical_below=config.serve.group_atypical_below,
        group_network_below=config.serve.group_network_below,
    )
    print(
        f"classified {int(summary['components'].sum())} components of {len(summary)} runs: "
        f"{int(summary['networks'].sum())} networks, {int(summary['noise'].sum())} Noise, "
        f"{int(summary['abstained'].sum())} abstained (Unknown)"
    )
    print(f"one table per run, e.g. {summary['table'].iloc[0]}")
    page = "classify_report" if args.maps == "dr" else "sica_classify_report"
    print(f"review page: {group_paths(args.deriv_dir)[page]}")
    return EXIT_OK


def _cmd_dataset(args: argparse.Namespace, config: Any) -> int:
    from rsnflow.dataset import build_dataset

    manifest = build_dataset(
        args.deriv_dir, args.dataset_dir, config.dataset, seed=config.seed, overwrite=args.overwrite
    )
    samples = manifest["split"]["samples"]
    print(
        f"dataset: {manifest['n_samples']} maps of {manifest['n_subjects']} subjects in {args.dataset_dir} "
        f"(train {samples['train']}, val {samples['val']}, test {samples['test']})"
    )
    return EXIT_OK


def _cmd_train(args: argparse.Namespace, config: Any) -> int:
    from rsnflow.train import train_classifier

    meta = train_classifier(
        args.dataset_dir,
        args.model_dir,
        args.arch,
        config.train,
        seed=config.seed,
        device=config.device,
        tracking=None if args.no_tracking else config.tracking,
        max_train_samples=args.max_train_samples,
        weights=args.weights,
        verify=args.verify,
        resume=args.resume,
    )
    print(
        f"{args.arch}: best validation accuracy {meta['val_accuracy']:.4f} at epoch {meta['best_epoch']} "
        f"({meta['train_seconds']:.0f} s); model in {args.model_dir}"
    )
    if meta["mlflow"]["run_id"]:
        ml = meta["mlflow"]
        print(
            f"MLflow run {ml['run_id']} at {ml['tracking_uri']}; registered {ml['registered_model']} "
            f"version {ml['version']}"
        )
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace, config: Any) -> int:
    from rsnflow.evaluate import evaluate_models

    summary = evaluate_models(
        args.dataset_dir,
        args.model_dirs,
        args.out,
        config.evaluate,
        tracking=None if args.no_tracking else config.tracking,
        device=config.device,
        cross_dataset=args.cross_dataset,
        seed=config.seed,
    )
    print((Path(args.out) / "table1.md").read_text())
    print(f"champion: {summary['champion']}; report: {Path(args.out) / 'index.html'}")
    return EXIT_OK


def _cmd_pipeline_compile(args: argparse.Namespace, config: Any) -> int:
    from kfp import compiler

    if args.pipeline == "label-cohort":
        from kfp_pipelines.label_pipeline import label_cohort_pipeline as pipeline

        out = Path(args.out or "build/label_cohort_pipeline.yaml")
    else:
        from kfp_pipelines.rsn_pipeline import rsn_pipeline as pipeline

        out = Path(args.out or "build/rsn_pipeline.yaml")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")  # the compiler wants a .yaml suffix
    compiler.Compiler().compile(pipeline, str(tmp))
    tmp.replace(out)
    print(f"pipeline IR YAML: {out}")
    return EXIT_OK


def _pipeline_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--arg NAME=VALUE`` pairs of submit/schedule, once the compiled package is known to exist."""
    if not Path(args.package).exists():
        raise FileNotFoundError(f"{args.package}: compile the pipeline first (`rsnflow pipeline compile`)")
    out = {}
    for pair in args.arg:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            from rsnflow.config import ConfigError

            raise ConfigError(f"--arg {pair!r}: expected NAME=VALUE")
        out[name] = yaml.safe_load(value)
    return out


def _cmd_pipeline_submit(args: argparse.Namespace, config: Any) -> int:
    from kfp_pipelines.submit import submit

    run_id = submit(args.host, args.package, _pipeline_arguments(args), args.experiment, None, args.namespace)
    print(f"run {run_id} started on {args.host}")
    return EXIT_OK


def _cmd_pipeline_schedule(args: argparse.Namespace, config: Any) -> int:
    from kfp_pipelines.submit import schedule

    job = schedule(
        args.host,
        args.package,
        args.watch,
        args.cron,
        _pipeline_arguments(args),
        args.experiment,
        args.namespace,
    )
    print(f"recurring run {job} on {args.host}: {args.watch} at cron '{args.cron}'")
    return EXIT_OK


def _cmd_predict(args: argparse.Namespace, config: Any) -> int:
    from rsnflow.io import write_text
    from rsnflow.serve.client import predict_file

    table = predict_file(args.maps, args.url, args.name)
    if args.out is not None:
        write_text(table.to_csv(sep="\t", index=False), args.out)
        print(f"{len(table)} maps labelled: {args.out}")
    else:
        print(table.drop(columns=["top3_probabilities"]).to_string(index=False))
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace, config: Any) -> int:
    import os

    if config.tracking.uri:
        os.environ["MLFLOW_TRACKING_URI"] = config.tracking.uri
    from rsnflow.serve import serve

    s = config.serve
    serve(
        args.model,
        name=s.name,
        host=s.host,
        port=s.port,
        max_request_mb=s.max_request_mb,
        max_batch=s.max_batch,
        abstain_below=s.abstain_below,
        device=config.device,
        atypical_below=s.atypical_below,
    )
    return EXIT_OK


def _cmd_run(args: argparse.Namespace, config: Any) -> int:
    from kfp_pipelines.local import run_local

    cohort = args.cohort
    if cohort is not None and not str(cohort).startswith(("s3://", "sim://")):
        from rsnflow.bids import check_dataset_description

        check_dataset_description(Path(cohort))
        cohort = str(Path(cohort).resolve())
    # -v puts kfp.local's own output (executor JSON, every task's log) on the terminal too.
    verbose = getattr(args, "verbose", 0) > 0
    if args.label_only is not None:
        from kfp_pipelines.local import run_label_local

        model = args.label_only
        if not model.startswith(("models:/", "runs:/")):
            model = str(Path(model).resolve())
        return run_label_local(args.work_dir, config, model, cohort, args.endpoint or "", verbose)
    if args.endpoint is not None:
        from rsnflow.config import ConfigError

        raise ConfigError("--endpoint: only with --label-only (the training pipeline classifies nothing)")
    extra = {"expert_labels": str(args.expert_labels.resolve())} if args.expert_labels else {}
    return run_local(args.work_dir, config, extra, cohort_uri=cohort, verbose=verbose)


def _cmd_bids(args: argparse.Namespace, config: Any) -> int:
    """BIDS-Apps: ``participant`` preprocesses; ``group`` runs group ICA, dual regression and labels."""
    if args.analysis_level == "participant":
        args.deriv_dir, args.force, args.recompute = args.output_dir, False, True
        return _cmd_preprocess(args, config)
    from rsnflow.ica import dual_regression_cohort, group_ica

    group_ica(args.output_dir, config.ica, seed=config.seed, device=config.device)
    dr = dual_regression_cohort(args.output_dir, config.dual_regression.des_norm, config.preprocess.n_jobs)
    args.deriv_dir = args.output_dir
    code = _cmd_label(args, config)
    return EXIT_PARTIAL if code == EXIT_OK and dr.failed else code


def _cmd_cohort_upload(args: argparse.Namespace, config: Any) -> int:
    """Upload a BIDS folder for the pipeline: every object with its SHA-256, then ``_COMPLETE.json``."""
    from rsnflow.bids import check_dataset_description, find_runs
    from rsnflow.storage import ObjectStore

    check_dataset_description(args.bids_dir)
    runs, _ = find_runs(args.bids_dir)
    files = ObjectStore.from_env().upload_tree(args.bids_dir, args.uri)
    print(
        f"uploaded {len(files)} files ({len(runs)} BOLD runs) to {args.uri}; complete (marker written last)"
    )
    return EXIT_OK


def _cmd_cohort_list(args: argparse.Namespace, config: Any) -> int:
    """The cohorts under a watched prefix: processed, complete (next in line) or incomplete."""
    from rsnflow.storage import ObjectStore

    cohorts = ObjectStore.from_env().list_cohorts(args.uri)
    for uri, state in cohorts:
        print(f"{state:<10}  {uri}")
    if not cohorts:
        print(f"no cohort under {args.uri}")
    return EXIT_OK


_HANDLERS: dict[str, Callable[[argparse.Namespace, Any], int]] = {
    "config show": _cmd_config,
    "simulate": _cmd_simulate,
    "preprocess": _cmd_preprocess,
    "group-ica": _cmd_group_ica,
    "dual-regression": _cmd_dual_regression,
    "label": _cmd_label,
    "dataset": _cmd_dataset,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "classify": _cmd_classify,
    "subject-ica": _cmd_subject_ica,
    "run": _cmd_run,
    "bids": _cmd_bids,
    "predict": _cmd_predict,
    "serve": _cmd_serve,
    "cohort upload": _cmd_cohort_upload,
    "cohort list": _cmd_cohort_list,
    "pipeline compile": _cmd_pipeline_compile,
    "pipeline submit": _cmd_pipeline_submit,
    "pipeline schedule": _cmd_pipeline_schedule,
}


def _command_name(args: argparse.Namespace) -> str:
    if args.command == "pipeline":
        return f"pipeline {args.pipeline_command}"
    if args.command == "config":
        return f"config {args.config_command}"
    if args.command == "cohort":
        return f"cohort {args.cohort_command}"
    return str(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rsnflow`` console script; returns the exit status.

    Errors of input, configuration, storage or a stage are logged, not raised.

    Parameters
    ----------
    argv : sequence of str or None, default=None
        Command-line arguments without the program name; None reads ``sys.argv``.

    Returns
    -------
    int
        The exit status: 0 success, 1 an error, 3 some subjects failed and were
        skipped, 130 interrupted. A usage error exits with 2 (``SystemExit``
        raised by argparse).
    """
    from rsnflow.config import ConfigError, load_config
    from rsnflow.errors import PreprocessingError, TrainingError
    from rsnflow.io import InvalidInputError
    from rsnflow.log import get_logger, setup_logging
    from rsnflow.storage import StorageError

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))
    log = get_logger("cli")
    name = _command_name(args)
    handler = _HANDLERS[name]
    try:
        config = load_config(getattr(args, "config", None), _overrides(args))
        return handler(args, config)
    except (
        ConfigError,
        InvalidInputError,
        StorageError,
        TrainingError,
        PreprocessingError,
        FileNotFoundError,
        FileExistsError,
        ConnectionError,
    ) as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
