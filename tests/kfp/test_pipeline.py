"""The KFP pipeline: its compiled IR YAML, and a whole run through kfp.local on a tiny BIDS folder."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
import yaml

from rsnflow.cli import EXIT_OK, EXIT_PARTIAL, main


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ir") / "rsn_pipeline.yaml"
    assert main(["pipeline", "compile", str(out)]) == EXIT_OK
    return list(yaml.safe_load_all(out.read_text()))


def test_dag(compiled: list[dict]) -> None:
    spec = compiled[0]
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {
        "resolve-cohort",
        "ingest",
        "for-loop-1",
        "group-ica",
        "for-loop-2",
        "label",
        "dataset",
        "train",
        "train-2",
        "train-3",
        "evaluate",
        "register-champion",
        "report",
        "mark-processed",
    }
    comps = spec["components"]
    assert set(comps["comp-for-loop-1"]["dag"]["tasks"]) == {"preprocess"}
    assert set(comps["comp-for-loop-2"]["dag"]["tasks"]) == {"dual-regression"}
    assert tasks["for-loop-1"]["parameterIterator"]["items"]["inputParameter"].endswith("ingest-Output")
    assert tasks["for-loop-1"]["iteratorPolicy"]["parallelismLimit"] == 8
    # Fan-in: group ICA waits for every subject; the threshold gates registration.
    assert "for-loop-1" in tasks["group-ica"]["dependentTasks"]
    gate = tasks["register-champion"]["inputs"]["parameters"]
    assert gate["champion_test_accuracy"]["taskOutputParameter"]["producerTask"] == "evaluate"
    assert gate["accuracy_threshold"]["componentInputParameter"] == "accuracy_threshold"
    for t in ("train", "train-2", "train-3"):
        assert "dataset" in tasks[t]["dependentTasks"]
    assert {"train", "train-2", "train-3"} <= set(tasks["evaluate"]["dependentTasks"])


def test_parameters_cover_the_papers_settings(compiled: list[dict]) -> None:
    params = compiled[0]["root"]["inputDefinitions"]["parameters"]
    defaults = {k: v.get("defaultValue") for k, v in params.items()}
    assert defaults["mlp_epochs"] == 25 and defaults["resnet_epochs"] == 25 and defaults["r3d_epochs"] == 25
    assert defaults["cohort_uri"] == "sim://demo" and defaults["gpu_limit"] == 1
    assert (
        defaults["overrides"] == {}
    )  # everything else: rsnflow/data/defaults.yaml (7 mm, 100 s, order 100, ...)
    for name in (
        "expert_labels",
        "tracking_uri",
        "accuracy_threshold",
        "gpu_node_selector",
        "gpu_tolerations",
    ):
        assert name in params


def test_credentials_and_endpoints_reach_every_task_that_talks_to_s3_or_mlflow(compiled: list[dict]) -> None:
    _, platform = compiled
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    talkers = {"resolve-cohort", "ingest", "train", "train-2", "train-3", "evaluate", "register-champion"}
    for name in {f"exec-{t}" for t in talkers} | {"exec-mark-processed"}:
        (secret,) = k8s[name]["secretAsEnv"]
        assert secret["secretNameParameter"]["componentInputParameter"] == "s3_secret"
        assert {e["envVar"] for e in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        (env,) = k8s[name]["configMapAsEnv"]
        assert {"RSNFLOW_S3_ENDPOINT", "MLFLOW_TRACKING_URI"} <= {e["envVar"] for e in env["keyToEnv"]}
    # No credential is a literal anywhere in the compiled pipeline.
    assert "AKIA" not in yaml.safe_dump(compiled) and "minio123" not in yaml.safe_dump(compiled)


def test_resources_accelerators_caching_and_retries(compiled: list[dict]) -> None:
    spec, platform = compiled
    execs = spec["deploymentSpec"]["executors"]
    for name in ("exec-train", "exec-train-2", "exec-train-3"):
        res = execs[name]["container"]["resources"]
        assert res["cpuRequest"] == 4 and res["memoryLimit"] == 32
    for name in ("exec-train-2", "exec-train-3"):
        acc = execs[name]["container"]["resources"]["accelerator"]
        assert "gpu_limit" in acc["resourceCount"] and "accelerator_type" in acc["resourceType"]
    assert "accelerator" not in execs["exec-train"]["container"]["resources"]  # the MLP runs anywhere
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {n for n, cfg in k8s.items() if "nodeSelector" in cfg} == {"exec-train-2", "exec-train-3"}
    for name in ("exec-train-2", "exec-train-3"):
        cfg = k8s[name]
        assert cfg["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"] == "gpu_node_selector"
        assert cfg["tolerations"][0]["tolerationJson"]["componentInputParameter"] == "gpu_tolerations"
    tasks = spec["root"]["dag"]["tasks"]
    # The cohort is resolved (and marked processed) by uncached tasks; everything after is cached.
    uncached = {
        n for n, t in tasks.items() if "for-loop" not in n and not t["cachingOptions"].get("enableCache")
    }
    assert uncached == {"resolve-cohort", "mark-processed"}
    assert tasks["ingest"]["inputs"]["parameters"]["content_hash"]["taskOutputParameter"] == {
        "outputParameterKey": "content_hash", "producerTask": "resolve-cohort",
    }  # fmt: skip
    assert set(tasks["mark-processed"]["dependentTasks"]) >= {"report", "register-champion"}
    for t in ("ingest", "train", "train-2", "train-3", "register-champion"):
        assert tasks[t]["retryPolicy"]["maxRetryCount"] == 3
    images = {e["container"]["image"] for e in execs.values()}
    assert any("rsnflow-train" in i for i in images) and any("rsnflow-pipeline" in i for i in images)


@pytest.mark.slow
def test_two_uploaded_cohorts_through_kfp_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recurring run as on a cluster, through kfp.local and a real S3 server (SeaweedFS).

    Two cohorts uploaded with ``rsnflow cohort upload`` under a watched prefix;
    two runs with the same ``cohort_uri=s3://cohorts/incoming/*``. The first takes
    cohort A, a BIDS folder with a two-session subject, and goes through to the
    report, the three models and the champion; A is then recorded as processed.
    The second takes cohort B, whose only subject is broken: the run fails and B
    stays unprocessed, so the next run takes it again.
    """
    import builtins
    import shutil

    from kfp_pipelines.local import demo_budget, run_label_local, run_local
    from rsnflow.config import load_config
    from rsnflow.ingest import resolve_cohort
    from rsnflow.simulate import simulate_cohort
    from rsnflow.storage import ObjectStore
    from servers import seaweedfs

    bids = tmp_path / "bids"
    simulate_cohort(bids, profile="tiny", seed=3, n_subjects=4, n_volumes=100, bad_subjects=["nan"])
    shutil.rmtree(bids / "derivatives")  # a user's folder: no ground truth beside it
    func = bids / "sub-01" / "func"
    for ses in ("1", "2"):  # sub-01 scanned twice: its run moves into two sessions
        target = bids / "sub-01" / f"ses-{ses}" / "func"
        target.mkdir(parents=True)
        shutil.copy2(
            func / "sub-01_task-rest_bold.nii.gz", target / f"sub-01_ses-{ses}_task-rest_bold.nii.gz"
        )
    shutil.rmtree(func)
    broken = tmp_path / "broken"  # cohort B: the NaN subject (the last, sub-05) alone
    good = {"sub-01", "sub-02", "sub-03", "sub-04"}
    shutil.copytree(bids, broken, ignore=lambda d, names: [n for n in names if n in good])
    assert [p.name for p in broken.glob("sub-*")] == ["sub-05"]
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("ica:\n  order: 20\n")
    config = load_config(cfg, {"simulate": {"profile": "tiny"}})
    work = tmp_path / "work"
    # Threshold 0 so that the registration branch runs too; the tiny budget, as the demo profile's.
    own_print = builtins.print
    budget = {**demo_budget(config), "accuracy_threshold": 0.0}
    watched = "s3://cohorts/incoming/*"
    with seaweedfs(tmp_path / "weed", buckets=("cohorts",)) as s3:
        for key, value in s3.items():
            monkeypatch.setenv(key, value)
        assert main(["cohort", "upload", str(bids), "s3://cohorts/incoming/a"]) == EXIT_OK
        assert main(["cohort", "upload", str(broken), "s3://cohorts/incoming/b"]) == EXIT_OK
        status = run_local(work, config, budget, cohort_uri=watched)
        # kfp.local's threads swap builtins.print; the caller's own print must come back unindented.
        assert builtins.print is own_print
        assert status == EXIT_PARTIAL  # the NaN subject is reported and skipped; the run goes on
        store = ObjectStore.from_env(s3)
        states = dict(store.list_cohorts("s3://cohorts/incoming"))
        assert states == {"s3://cohorts/incoming/a": "processed", "s3://cohorts/incoming/b": "complete"}
        # Cohort B: no valid run, the run fails. kfp.local honours the tasks' retry policy (3 retries),
        # whose backoff (30 s, 60 s, 120 s) is for a cluster's transient failures: not waited out here.
        import types

        from kfp.local.orchestrator import task_executor

        waits: list[float] = []
        monkeypatch.setattr(task_executor, "time", types.SimpleNamespace(sleep=waits.append))
        with pytest.raises(RuntimeError, match="ingest"):
            run_local(tmp_path / "work-b", config, budget, cohort_uri=watched)
        log_b = (tmp_path / "work-b" / "kfp.log").read_text()
        assert len(re.findall(r"Executing task \S*'ingest'", log_b)) == 4  # the first try and 3 retries
        assert waits == [30.0, 60.0, 120.0]  # the compiled backoff, asked for and not waited
        assert dict(store.list_cohorts("s3://cohorts/incoming"))["s3://cohorts/incoming/b"] == "complete"
        assert resolve_cohort(watched).uri == "s3://cohorts/incoming/b"  # the next run takes B again
        assert "no valid run" in log_b
        # A new cohort labelled by the champion of run 1, through the label-cohort pipeline: nothing trained.
        label_cfg = load_config(
            cfg,
            {
                "simulate": {"profile": "tiny", "subjects": 2},
                "seed": 5,
                "tracking": {"uri": f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"},
            },
        )
        champion = "models:/rsnflow-rsn-classifier@champion"
        assert run_label_local(tmp_path / "work-label", label_cfg, champion) == EXIT_OK
    _labelled_as_the_champion_says(tmp_path / "work-label", work)
    page = work / "report.html"
    text = page.read_text()
    assert "Table 1" in text and "mlp" in text and "r3d18" in text and "skipped" in text
    # A real .html file (a browser shows an extension-less file as source), whose links all resolve.
    assert not page.is_symlink()
    linked = _resolving_links(page)
    assert ".html" in {p.suffix for p in linked} <= {".html", ".tsv", ".png"}
    assert len([p for p in linked if p.name.startswith("qc-")]) == 4  # the four good subjects
    _browse(page)
    (run_dir,) = (work / "pipeline_root").glob("rsnflow-*")
    assert len(list(run_dir.glob("train*/model/weights.pt"))) == 3
    ingest = (next(run_dir.glob("ingest/table")) / "subjects.tsv").read_text()
    assert "sub-01_ses-1_task-rest" in ingest and "sub-01_ses-2_task-rest" in ingest
    pattern = "for-loop-*/dual-regression/maps/sub-01/ses-*/func/*desc-dr_components.nii.gz"
    assert len(list(run_dir.glob(pattern))) == 2
    with sqlite3.connect(work / "mlflow" / "mlflow.db") as db:
        runs = {r[0] for r in db.execute("select name from runs")}
        aliases = list(db.execute("select alias from registered_model_aliases"))
    assert {"train-mlp", "train-resnet2p5d", "train-r3d18", "evaluate"} <= runs
    assert aliases == [("champion",)]
    _mlflow_as_a_person_sees_it(f"sqlite:///{work / 'mlflow' / 'mlflow.db'}", run_dir)
    # The KFP UI's artifacts: metrics, Table 1 in Markdown, a confusion matrix per model.
    ev = run_dir / "evaluate"
    assert "Table 1" in (ev / "table1").read_text()
    for arch in ("mlp", "resnet2p5d", "r3d18"):
        meta = json.loads((ev / "executor_output.json").read_text())["artifacts"][f"{arch}_confusion"]
        confusion = meta["artifacts"][0]["metadata"]["confusionMatrix"]
        assert len(confusion["annotationSpecs"]) == len(confusion["rows"]) >= 2


def _labelled_as_the_champion_says(work: Path, trained: Path) -> None:
    """Each run of the new cohort has a table of the champion's 20 components; its maps are on the champion's
    reference maps (the training run's group maps); nothing was trained."""
    import nibabel as nib

    (run_dir,) = (work / "pipeline_root").glob("rsnflow-label-cohort-*")
    tables = sorted((run_dir / "classify" / "labels").rglob("*_desc-classifier_labels.tsv"))
    assert [t.name.split("_")[0] for t in tables] == ["sub-01", "sub-02"]
    for t in tables:
        rows = t.read_text().splitlines()
        assert (
            rows[0].startswith("component\tlabel\tnetwork\tprobability\tnetwork_probability")
            and len(rows) == 21
        )
    (trained_run,) = (trained / "pipeline_root").glob("rsnflow-*")
    ours = next(run_dir.glob("reference-maps/derivatives/group/*desc-ica_components.nii.gz")).read_bytes()
    theirs = next(trained_run.glob("group-ica/derivatives/group/*desc-ica_components.nii.gz")).read_bytes()
    assert ours == theirs
    assert (
        nib.load(
            next(run_dir.glob("for-loop-*/dual-regression/maps/sub-01/func/*desc-dr_components.nii.gz"))
        ).shape[3]
        == 20
    )
    assert not list(run_dir.glob("train*")) and (work / "labels.html").is_file()
    # In process, each map's reference map (its group map) weighs in (rsnflow.classify).
    assert "group map weighs in" in (work / "labels.html").read_text()
    assert (
        "networks"
        in json.loads((run_dir / "classify" / "executor_output.json").read_text())["parameterValues"][
            "Output"
        ]
    )


def _mlflow_as_a_person_sees_it(uri: str, run_dir: Path) -> None:
    """The experiment opens on its runs; the evaluation run holds Table 1 and the confusion matrices;
    only the champion carries the alias, and every version says what it is."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("rsnflow")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (evaluation,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'evaluate'")
    assert {"mlp.test_accuracy", "r3d18.test_macro_f1"} <= set(evaluation.data.metrics)
    logged = {a.path for a in client.list_artifacts(evaluation.info.run_id, "evaluation")}
    assert {"evaluation/table1.md", "evaluation/confusion_mlp.png", "evaluation/confusion_r3d18.tsv"} <= (
        logged
    )
    champion = client.get_model_version_by_alias("rsnflow-rsn-classifier", "champion")
    versions = client.search_model_versions("name = 'rsnflow-rsn-classifier'")
    assert len(versions) == 3
    roles = sorted(v.tags["role"] for v in versions)
    assert roles == ["challenger", "challenger", "champion"]
    assert champion.tags["role"] == "champion" and champion.tags["pipeline_run"].startswith("rsnflow")
    assert {"test_accuracy", "dataset_sha256", "code_version", "evaluation_run_id"} <= set(champion.tags)
    assert champion.tags["evaluation_run_id"] == evaluation.info.run_id


def _browse(front: Path) -> None:
    """Every page of the run's site opened in headless Chromium, as a person would; screenshots kept.

    Each page must render as HTML (not source text), every link and image must
    resolve, and the console must stay free of errors. Screenshots go to
    ``build/screenshots/`` (the README shows two of them).
    """
    from browser import Browser

    shots = Path(__file__).parents[2] / "build" / "screenshots"
    seen: set[Path] = set()
    todo = [front]
    with Browser() as browser:
        while todo:
            page = todo.pop(0)
            if page in seen:
                continue
            seen.add(page)
            name = "front" if page == front else page.stem
            check = browser.check(page, shots / f"{name}.png")
            assert check.problems == [], f"{page}: {check.problems}"
            assert check.title, f"{page}: no <title>"
            todo += [p for p in check.links if p.suffix == ".html" and p not in seen]
    assert len(seen) >= 8  # the front page, the stage pages and the subjects' QC pages


def _resolving_links(page: Path, depth: int = 2) -> set[Path]:
    """Every local file ``page`` links to (href, src), followed ``depth`` pages deep; each must exist."""
    from html.parser import HTMLParser

    class Links(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.found += [v for k, v in attrs if k in ("href", "src") and v and not v.startswith("data:")]

    parser = Links()
    parser.feed(page.read_text())
    out = set()
    text = page.read_text()
    for href in parser.found:
        if href.startswith("#"):  # a place on the page itself
            assert f'id="{href[1:]}"' in text, f"{page}: no element with id {href[1:]!r}"
            continue
        target = (page.parent / href).resolve()
        assert target.is_file(), f"{page}: link {href!r} does not resolve"
        out.add(target)
        if depth > 1 and target.suffix == ".html":
            out |= _resolving_links(target, depth - 1)
    return out


def test_the_label_cohort_pipeline_compiles_to_its_own_dag(tmp_path: Path) -> None:
    out = tmp_path / "label.yaml"
    assert main(["pipeline", "compile", "--pipeline", "label-cohort", str(out)]) == EXIT_OK
    spec, platform = yaml.safe_load_all(out.read_text())
    assert spec["pipelineInfo"]["name"] == "rsnflow-label-cohort"
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {
        "resolve-cohort", "ingest", "for-loop-1", "reference-maps", "for-loop-2", "classify",
        "mark-processed",
    }  # fmt: skip
    comps = spec["components"]
    assert set(comps["comp-for-loop-2"]["dag"]["tasks"]) == {"dual-regression"}
    assert "for-loop-1" in tasks["reference-maps"]["dependentTasks"]
    assert {"for-loop-2", "reference-maps"} <= set(tasks["classify"]["dependentTasks"])
    assert tasks["mark-processed"]["dependentTasks"] == ["classify", "resolve-cohort"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["model_uri"]["defaultValue"] == "models:/rsnflow-rsn-classifier@champion"
    assert params["endpoint"]["defaultValue"] == ""
    # The tasks that read the registry or the object store get the Secret and the ConfigMap.
    execs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-reference-maps", "exec-classify", "exec-ingest", "exec-mark-processed"):
        assert execs[name]["secretAsEnv"][0]["secretNameParameter"]["componentInputParameter"] == "s3_secret"
    assert not {t for t in tasks if "retryPolicy" not in tasks[t]} - {"for-loop-1", "for-loop-2"}
    # The champion alias is resolved once (reference-maps pins its version) and classify uses the pin;
    # neither is cached, since the alias and the endpoint move.
    model = tasks["classify"]["inputs"]["parameters"]["model_uri"]["taskOutputParameter"]
    assert model == {"producerTask": "reference-maps", "outputParameterKey": "Output"}
    for name in ("reference-maps", "classify", "resolve-cohort", "mark-processed"):
        assert not tasks[name]["cachingOptions"].get("enableCache"), name
    # Run lengths are checked against the model's order later (dual regression), not ica.order at ingest.
    assert tasks["ingest"]["inputs"]["parameters"]["check_order"]["runtimeValue"]["constant"] is False


def test_recurring_run_request() -> None:
    from kfp_pipelines.submit import parse_name, recurring_run_request

    req = recurring_run_request("s3://cohorts/incoming", "0 0 2 * * *", {"seed": 1})
    assert req["params"] == {"seed": 1, "cohort_uri": "s3://cohorts/incoming/*"}
    assert req["max_concurrency"] == 1 and req["no_catchup"] is True
    with pytest.raises(ValueError, match="six fields"):
        recurring_run_request("s3://cohorts/incoming", "0 2 * * *", {})
    assert parse_name("s3://Cohorts/in_coming") == "cohorts-in-coming"


def test_submit_needs_a_compiled_package(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--package", str(tmp_path / "none.yaml")]
    assert main(argv) == 1
    assert "compile the pipeline first" in capfd.readouterr().err
    assert main(["pipeline", "submit", "--host", "h", "--package", str(tmp_path), "--arg", "novalue"]) == 1
    argv = [
        "pipeline",
        "schedule",
        "--host",
        "h",
        "--package",
        str(tmp_path / "none.yaml"),
        "--watch",
        "s3://b/p",
    ]
    assert main(argv) == 1
    assert "compile the pipeline first" in capfd.readouterr().err
