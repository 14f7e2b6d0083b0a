"""The Kubeflow Pipelines layer: one thin component per rsnflow stage and the pipeline."""
