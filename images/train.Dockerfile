# rsnflow training image (CUDA torch): the three `train` steps on GPU nodes.
# Build from the repository root:  docker build -f images/train.Dockerfile -t rsnflow-train:0.1.0 .
# torch's PyPI wheels carry their CUDA runtime (the nvidia-* wheels of the lock); the node supplies the driver.
# Another base with Python 3.11 and pip on PATH: `podman build --from IMAGE` (make images IMAGE_BASE=...).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RSNFLOW_CACHE_DIR=/opt/rsnflow/cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /opt/rsnflow
# A read-only folder of wheels mounted by the build, if any (make images IMAGE_WHEELS=...).
ARG WHEELS=
COPY requirements-runtime.lock images/install-runtime.sh ./
RUN ./install-runtime.sh lock

COPY pyproject.toml README.md ./
COPY src ./src
COPY kfp_pipelines ./kfp_pipelines
RUN ./install-runtime.sh project . \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin rsnflow \
    && mkdir -p "${RSNFLOW_CACHE_DIR}" \
    && python -c "from rsnflow.space import load_brain_mask, load_template; load_template(); load_brain_mask()" \
    && chown -R 10001:10001 "${RSNFLOW_CACHE_DIR}"

USER 10001:10001
# checkov:skip=CKV_DOCKER_2: a batch image (KFP training steps); there is no long-running process to probe
ENTRYPOINT ["rsnflow"]
CMD ["train", "--help"]
