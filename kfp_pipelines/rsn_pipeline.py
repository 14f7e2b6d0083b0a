"""The rsnflow pipeline: ingest -> preprocess (ParallelFor) -> group ICA -> dual regression
(ParallelFor) -> label -> dataset -> three trainings in parallel -> evaluate -> register the
champion (if it passes the accuracy threshold) -> report.

Defaults are the paper's settings; ``rsnflow run`` passes the demo's budget
(fewer CNN epochs, a subset for the CNNs). GPU use is a parameter: with
``gpu_limit`` 0, ``gpu_node_selector`` ``{}`` and ``gpu_tolerations`` ``[]`` the
training tasks ask for no accelerator and no GPU node, and the pipeline runs on
a CPU-only cluster.
"""

import os

from kfp import dsl, kubernetes
from kfp_pipelines import components as c
from rsnflow.config import load_config

#: Subjects processed at once in each ParallelFor. KFP needs it at compile time,
#: so it is not a run parameter: set ``RSNFLOW_PARALLELISM`` when compiling.
PARALLELISM = int(os.environ.get("RSNFLOW_PARALLELISM", "8"))
#: Steps that talk to the network (object store, MLflow) retry with backoff.
_RETRY = {"num_retries": 3, "backoff_duration": "30s", "backoff_factor": 2.0, "backoff_max_duration": "600s"}
#: The paper's epochs (``train.epochs`` of defaults.yaml), every model's default.
_EPOCHS = load_config().train.epochs
#: The keys of the S3 Secret (KFP's own ``mlpipeline-minio-artifact`` has these; the chart's Secret too).
S3_SECRET_KEYS = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}
#: The chart's ConfigMap (``charts/rsnflow/templates/pipeline-env.yaml``): endpoints and tracking URI.
ENV_KEYS = ["RSNFLOW_S3_ENDPOINT", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "AWS_DEFAULT_REGION"]


def _cluster_env(task: dsl.PipelineTask, s3_secret: str, env_config_map: str) -> dsl.PipelineTask:
    """S3 credentials from the Secret and the endpoints and MLflow URI from the chart's ConfigMap.

    Every task that talks to the object store or to MLflow gets them; kfp.local
    ignores both (the local run passes its own tracking URI and environment).
    """
    kubernetes.use_secret_as_env(task, secret_name=s3_secret, secret_key_to_env=S3_SECRET_KEYS)
    kubernetes.use_config_map_as_env(
        task, config_map_name=env_config_map, config_map_key_to_env={k: k for k in ENV_KEYS}
    )
    return task


def ingest_and_preprocess(
    cohort_uri: str, seed: int, overrides: dict, s3_secret: str, env_config_map: str, check_order: bool = True
) -> tuple[dsl.PipelineTask, dsl.PipelineTask, dsl.PipelineTask]:
    """The tasks both pipelines start with: resolve the cohort, ingest it, preprocess each subject."""
    # Never cached: a recurring run's same cohort_uri must reach new data (the cache key is the inputs).
    cohort = c.resolve_cohort(cohort_uri=cohort_uri).set_caching_options(False).set_retry(**_RETRY)
    _cluster_env(cohort, s3_secret, env_config_map)
    ing = c.ingest(
        cohort_uri=cohort.outputs["uri"], content_hash=cohort.outputs["content_hash"], seed=seed,
        overrides=overrides, check_order=check_order,
    ).set_retry(**_RETRY)  # fmt: skip
    _cluster_env(ing, s3_secret, env_config_map)
    ing.set_cpu_request("1").set_memory_request("4G")
    with dsl.ParallelFor(ing.outputs["Output"], parallelism=PARALLELISM, name="subjects") as s:
        pre = c.preprocess(cohort=ing.outputs["cohort"], subject=s, overrides=overrides)
        pre.set_cpu_request("2").set_memory_request("4G").set_memory_limit("8G")
    return cohort, ing, pre


def dual_regression_per_subject(
    ing: dsl.PipelineTask, group: dsl.PipelineTask, overrides: dict
) -> dsl.PipelineTask:
    """Dual regression of each ingested subject onto ``group``'s maps (a ParallelFor), in both pipelines."""
    with dsl.ParallelFor(ing.outputs["Output"], parallelism=PARALLELISM, name="dr-subjects") as s:
        dr = c.dual_regression(group=group.outputs["derivatives"], subject=s, overrides=overrides)
        dr.set_cpu_request("1").set_memory_request("4G")
    return dr


@dsl.pipeline(
    name="rsnflow",
    description="Resting-state fMRI: preprocessing, group ICA, dual regression, RSN "
    "labelling, three classifiers, MLflow tracking and registration.",
)
def rsn_pipeline(
    cohort_uri: str = "sim://demo",
    seed: int = 0,
    overrides: dict = {},
    expert_labels: str = "",
    mlp_epochs: int = _EPOCHS,
    resnet_epochs: int = _EPOCHS,
    r3d_epochs: int = _EPOCHS,
    resnet_max_train_samples: int = 0,
    r3d_max_train_samples: int = 0,
    eval_max_maps: int = 0,
    accuracy_threshold: float = 0.9,
    tracking_uri: str = "",
    gpu_limit: int = 1,
    accelerator_type: str = "NVIDIA_TESLA_T4",
    gpu_node_selector: dict = {"nvidia.com/gpu.present": "true"},
    gpu_tolerations: list = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    s3_secret: str = "mlpipeline-minio-artifact",
    inference_service: str = "rsn-classifier",
    env_config_map: str = "rsnflow-pipeline-env",
) -> str:
    cohort, ing, pre = ingest_and_preprocess(cohort_uri, seed, overrides, s3_secret, env_config_map)
    ica = c.group_ica(preprocessed=dsl.Collected(pre.outputs["derivatives"]), seed=seed, overrides=overrides)
    ica.set_cpu_request("4").set_memory_request("8G").set_memory_limit("16G")
    dr = dual_regression_per_subject(ing, ica, overrides)
    lab = c.label(
        group=ica.outputs["derivatives"],
        maps=dsl.Collected(dr.outputs["maps"]),
        expert_labels=expert_labels,
        overrides=overrides,
    )
    data = c.dataset(
        group=ica.outputs["derivatives"],
        maps=dsl.Collected(dr.outputs["maps"]),
        labels=lab.outputs["labels"],
        seed=seed,
        overrides=overrides,
    )
    data.set_memory_request("8G")
    trained = {}
    for arch, epochs, subset in (
        ("mlp", mlp_epochs, 0),
        ("resnet2p5d", resnet_epochs, resnet_max_train_samples),
        ("r3d18", r3d_epochs, r3d_max_train_samples),
    ):
        t = c.train(
            data=data.outputs["data"],
            arch=arch,
            epochs=epochs,
            max_train_samples=subset,
            seed=seed,
            tracking_uri=tracking_uri,
            overrides=overrides,
        ).set_display_name(f"train-{arch}")
        t.set_retry(**_RETRY)
        _cluster_env(t, s3_secret, env_config_map)
        t.set_cpu_request("4").set_cpu_limit("8").set_memory_request("16G").set_memory_limit("32G")
        if arch != "mlp":
            t.set_accelerator_type(accelerator_type).set_accelerator_limit(gpu_limit)
            kubernetes.add_node_selector_json(t, node_selector_json=gpu_node_selector)
            kubernetes.add_toleration_json(t, toleration_json=gpu_tolerations)
        trained[arch] = t
    ev = c.evaluate(
        data=data.outputs["data"],
        mlp=trained["mlp"].outputs["model"],
        resnet2p5d=trained["resnet2p5d"].outputs["model"],
        r3d18=trained["r3d18"].outputs["model"],
        max_maps=eval_max_maps,
        seed=seed,
        tracking_uri=tracking_uri,
        pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        overrides=overrides,
    )
    _cluster_env(ev, s3_secret, env_config_map)
    # The accuracy gate is inside the task, not a dsl.If: kfp.local 2.17 evaluates
    # dsl.If conditions as false whatever their value (kubeflow/pipelines#13313),
    # and the local run must register exactly as a cluster run does.
    reg = c.register_champion(
        table=ev.outputs["table"],
        champion=ev.outputs["champion"],
        champion_test_accuracy=ev.outputs["champion_test_accuracy"],
        accuracy_threshold=accuracy_threshold,
        tracking_uri=tracking_uri,
        inference_service=inference_service,
        overrides=overrides,
    ).set_retry(**_RETRY)
    _cluster_env(reg, s3_secret, env_config_map)
    rep = c.report(
        ingest_summary=ing.outputs["summary"],
        ingest_table=ing.outputs["table"],
        qc=dsl.Collected(pre.outputs["qc"]),
        ica_report=ica.outputs["report"],
        review=lab.outputs["review"],
        table=ev.outputs["table"],
        evaluation=ev.outputs["report"],
        statuses=dsl.Collected(pre.outputs["Output"]),
    )
    # Last, and only after everything succeeded: a failed run leaves its cohort for the next one.
    done = c.mark_processed(watched=cohort.outputs["watched"], cohort_uri=cohort.outputs["uri"])
    done.after(rep, reg).set_caching_options(False).set_retry(**_RETRY)
    _cluster_env(done, s3_secret, env_config_map)
    return rep.outputs["Output"]
