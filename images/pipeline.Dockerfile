# rsnflow pipeline image (CPU): every KFP step but training, and the MLflow tracking server of the chart.
# Build from the repository root:  docker build -f images/pipeline.Dockerfile -t rsnflow-pipeline:0.1.0 .
# The base is pinned to an exact Python patch release and Debian release.
# Another base with Python 3.11 and pip on PATH: `podman build --from IMAGE` (make images IMAGE_BASE=...).
FROM python:3.11.11-slim-bookworm

# TORCH=cpu takes torch's CPU build from TORCH_INDEX; TORCH=lock the lock's CUDA build (where that index is out of reach).
ARG TORCH=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RSNFLOW_CACHE_DIR=/opt/rsnflow/cache \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/rsnflow
# A read-only folder of wheels mounted by the build, if any (make images IMAGE_WHEELS=...).
ARG WHEELS=
COPY requirements-runtime.lock images/install-runtime.sh ./
RUN ./install-runtime.sh "${TORCH}"
COPY images/mlflow-server.txt ./
RUN ./install-runtime.sh extra mlflow-server.txt

COPY pyproject.toml README.md ./
COPY src ./src
COPY kfp_pipelines ./kfp_pipelines
RUN ./install-runtime.sh project . \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin rsnflow \
    && mkdir -p "${RSNFLOW_CACHE_DIR}" \
    # The resampled template and masks are built once here, so no step builds them at run time.
    && python -c "from rsnflow.space import load_brain_mask, load_template, load_tissue_probabilities as t; load_template(); load_brain_mask(); t()" \
    && chown -R 10001:10001 "${RSNFLOW_CACHE_DIR}"

USER 10001:10001
# checkov:skip=CKV_DOCKER_2: a batch image (KFP steps, mlflow server); health is probed by Kubernetes, not Docker
# BIDS-Apps convention: `podman run IMAGE BIDS_DIR OUTPUT_DIR participant|group [options]`.
# KFP tasks set their own command, so the entrypoint is the one people type by hand.
ENTRYPOINT ["rsnflow", "bids"]
CMD ["--help"]
