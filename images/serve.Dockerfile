# rsnflow serving image: the KServe predictor (`rsnflow serve`), CPU torch.
# Build from the repository root:  docker build -f images/serve.Dockerfile -t rsnflow-serve:0.1.0 .
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

COPY pyproject.toml README.md ./
COPY src ./src
COPY kfp_pipelines ./kfp_pipelines
RUN ./install-runtime.sh project . \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin rsnflow \
    && mkdir -p "${RSNFLOW_CACHE_DIR}" \
    && python -c "from rsnflow.space import load_brain_mask, load_template; load_template(); load_brain_mask()" \
    && chown -R 10001:10001 "${RSNFLOW_CACHE_DIR}"

USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4)"]
# In a pod the chart passes --host 0.0.0.0 and the model URI; the default binds loopback only.
ENTRYPOINT ["rsnflow", "serve"]
CMD ["models:/rsnflow-rsn-classifier@champion", "--host", "127.0.0.1", "--port", "8080"]
