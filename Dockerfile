# syntax=docker/dockerfile:1
#
# lynx-relay container image.
#
#   docker build -t lynx-relay:0.1.0 .
#
# Two stages: the builder resolves the locked environment with uv; the runtime stage gets only
# that virtual environment, tini and a numeric non-root user. The runtime never writes to its
# root filesystem (the chart mounts it read-only, with an emptyDir on /tmp only).

# Both stages use the same base so the venv's interpreter symlink (/usr/local/bin/python3.11)
# resolves in the runtime stage. Bookworm, because the tini version pinned below is Bookworm's.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

# uv comes from its PyPI package: pip is already in the base image and PyPI is the registry the
# build can reach anyway. Keep it in step with the uv that wrote uv.lock.
ARG UV_VERSION=0.13.9

# UV_COMPILE_BYTECODE: compile .pyc files now, because the runtime cannot write them.
# UV_LINK_MODE=copy: the cache and the venv are on different layers; hard links cannot span them.
# UV_PYTHON_DOWNLOADS=never: use the base image's interpreter, never fetch one.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install --no-cache-dir "uv==${UV_VERSION}"

WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when the lock file changes.
# `--locked` checks the lock against every dependency group, so it reads the fal emulator's
# pyproject.toml (a dev-group path dependency); that file is metadata only, and `--no-dev`
# installs none of the emulator, whose code never enters the build context (.dockerignore).
COPY pyproject.toml uv.lock README.md ./
COPY fal_emulator/pyproject.toml ./fal_emulator/
RUN uv sync --locked --no-dev --no-install-project --no-cache

# Then the project itself, installed as a regular (non-editable) package so the runtime stage
# needs nothing from /src.
COPY service ./service
RUN uv sync --locked --no-dev --no-editable --no-cache


FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="lynx-relay" \
      org.opencontainers.image.description="Kafka requests in, fal.ai Lynx video jobs, Kafka result events out" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# tini as PID 1: it forwards SIGTERM to the relay (which hands off its jobs and exits 0) and
# reaps zombies. Pinned to Bookworm's build; bump it together with the base image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*

# A numeric user and group (10001), so Kubernetes' runAsNonRoot can verify it without reading
# /etc/passwd; the Helm chart's runAsUser/runAsGroup use the same number. No home directory:
# nothing should be written outside /tmp.
RUN groupadd --system --gid 10001 relay \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin relay

COPY --from=builder /app/.venv /app/.venv

# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only; the builder already compiled.
# PYTHONUNBUFFERED: JSON log lines reach `kubectl logs` as they are written.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app
USER 10001:10001

# /metrics, /livez and /readyz (RELAY_HTTP_PORT).
EXPOSE 8000

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["lynx-relay", "run"]
