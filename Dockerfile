# syntax=docker/dockerfile:1
# keda-queue-scaler: a KEDA external scaler. Multi-stage: the build stage installs the project from its own
# metadata (pyproject.toml) into a virtualenv; the runtime stage copies only that virtualenv.
# Build (README, "Container image"; tests/test_image.py builds it the same way with podman):
#   docker build --build-arg VERSION=$(python -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])') -t keda-queue-scaler:0.1.0 .

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/scaler
WORKDIR /src
# Only what the package build reads: its metadata (README.md is the long description) and its two packages.
COPY pyproject.toml README.md ./
COPY scaler ./scaler
COPY adapters ./adapters
# Not editable, compiled to bytecode here: the runtime filesystem is read-only.
RUN /opt/scaler/bin/pip install --no-warn-script-location .
# venv seeds setuptools (10 MB) that nothing at run time imports; the package build above used its own, isolated
# copy. pip stays: `pip check` in the image verifies its dependencies (tests/test_image.py).
RUN /opt/scaler/bin/pip uninstall --yes setuptools

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="keda-queue-scaler" \
      org.opencontainers.image.description="KEDA external scaler for RabbitMQ, Google Cloud Pub/Sub and Prometheus" \
      org.opencontainers.image.source="https://github.com/example/keda-queue-scaler" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/scaler/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/scaler /opt/scaler
# A numeric UID/GID that owns nothing in the image, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# gRPC (KEDA's scalerAddress) and HTTP (/metrics, /healthz, /readyz): the server's defaults.
EXPOSE 9090 8080
ENTRYPOINT ["scaler"]
CMD ["serve"]
