"""The label-cohort pipeline: a new cohort labelled by the champion, nothing retrained.

ingest -> preprocess (ParallelFor) -> the champion's reference maps become the
cohort's group maps -> dual regression onto them (ParallelFor) -> classify
every run's maps through the InferenceService (in process when no endpoint is
given) -> record the cohort as processed. The training pipeline
(``rsn_pipeline``) stays for retraining; this one is what a recurring run on
new cohorts schedules.
"""

from kfp import dsl
from kfp_pipelines import components as c
from kfp_pipelines.rsn_pipeline import (
    _RETRY,
    _cluster_env,
    dual_regression_per_subject,
    ingest_and_preprocess,
)

#: The registered champion, read through MLflow (``MLFLOW_TRACKING_URI`` or ``tracking_uri``).
CHAMPION = "models:/rsnflow-rsn-classifier@champion"


@dsl.pipeline(
    name="rsnflow-label-cohort",
    description="Resting-state fMRI: preprocess a new cohort, regress it onto the champion's reference "
    "maps and label every component with the champion (no retraining).",
)
def label_cohort_pipeline(
    cohort_uri: str = "sim://demo",
    model_uri: str = CHAMPION,
    endpoint: str = "",
    seed: int = 0,
    overrides: dict = {},
    tracking_uri: str = "",
    s3_secret: str = "mlpipeline-minio-artifact",
    env_config_map: str = "rsnflow-pipeline-env",
) -> str:
    # Run lengths are checked against the model's order by dual regression, per subject.
    cohort, ing, pre = ingest_and_preprocess(cohort_uri, seed, overrides, s3_secret, env_config_map, False)
    # Never cached: the alias (champion) moves; its version is pinned here and handed to classify.
    ref = c.reference_maps(
        preprocessed=dsl.Collected(pre.outputs["derivatives"]), model_uri=model_uri, tracking_uri=tracking_uri
    ).set_retry(**_RETRY)
    ref.set_caching_options(False)
    _cluster_env(ref, s3_secret, env_config_map)
    dr = dual_regression_per_subject(ing, ref, overrides)
    labelled = c.classify(
        group=ref.outputs["derivatives"],
        maps=dsl.Collected(dr.outputs["maps"]),
        model_uri=ref.outputs["Output"],
        endpoint=endpoint,
        tracking_uri=tracking_uri,
        overrides=overrides,
    ).set_retry(**_RETRY)
    labelled.set_caching_options(False)  # an endpoint may serve another model by now
    _cluster_env(labelled, s3_secret, env_config_map)
    labelled.set_cpu_request("2").set_memory_request("4G")
    # Last, and only after everything succeeded: a failed run leaves its cohort for the next one.
    done = c.mark_processed(watched=cohort.outputs["watched"], cohort_uri=cohort.outputs["uri"])
    done.after(labelled).set_caching_options(False).set_retry(**_RETRY)
    _cluster_env(done, s3_secret, env_config_map)
    return labelled.outputs["Output"]
