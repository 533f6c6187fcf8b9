# The serving image: one model bundle, served by `python -m flowship.serving` on port 8000.
# Built from a context that flowship.adapters.docker_engine.build_context assembles:
#   requirements.txt + wheelhouse/   pinned serving deps, downloaded on the host (builds can't reach PyPI)
#   flowship/                        __init__.py, errors.py, files.py, values.py, features.py, serving/
#   model/                           the model bundle (model.pkl, metadata.json, golden.json)
# The base is a build arg: where Docker Hub can't be reached, a local Debian bookworm image with python3-venv
# (`make base-image`) stands in; both have Python 3.11 and glibc 2.36.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /build
COPY requirements.txt ./
COPY wheelhouse/ ./wheelhouse/
# Exactly the host's versions, so the pickled model and the image agree. Then drop what serving never
# reads: pip and the packages' own test suites (scipy, pandas, sklearn).
RUN /opt/venv/bin/python -m pip install --no-index --find-links wheelhouse -r requirements.txt \
 && /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools \
 && find /opt/venv/lib -type d -name tests -prune -exec rm -rf {} +
COPY flowship/ /app/flowship/
# Compiled here: the app user can't write __pycache__ into the root-owned code.
RUN /opt/venv/bin/python -m compileall -q /app/flowship

FROM ${BASE_IMAGE}
ARG APP_UID=10001
RUN groupadd --system --gid ${APP_UID} flowship \
 && useradd --system --uid ${APP_UID} --gid ${APP_UID} --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin flowship \
 && mkdir -p /var/log/flowship \
 && chown ${APP_UID}:${APP_UID} /var/log/flowship
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app/flowship /app/flowship
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLOWSHIP_MODEL_DIR=/app/model \
    FLOWSHIP_LOG_DIR=/var/log/flowship
WORKDIR /app
# Numeric, so orchestrators can check "runs as non-root" without reading /etc/passwd.
USER ${APP_UID}:${APP_UID}
EXPOSE 8000
# No curl in the image. A short interval: daemon 20.10 ignores --start-interval, so the first result
# comes one interval after start.
HEALTHCHECK --interval=3s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('FLOWSHIP_PORT', '8000'), timeout=2)"]
CMD ["python", "-m", "flowship.serving"]

# The model last: a new model rebuilds only this layer (and the labels below, which cost nothing).
COPY model/ /app/model/
ARG MODEL_NAME=unknown
ARG MODEL_VERSION=unknown
ARG DATA_HASH=unknown
ARG GIT_COMMIT=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="flowship-${MODEL_NAME}" \
      org.opencontainers.image.version="${MODEL_VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.created="${CREATED}" \
      io.flowship.model.name="${MODEL_NAME}" \
      io.flowship.model.version="${MODEL_VERSION}" \
      io.flowship.data.hash="${DATA_HASH}" \
      io.flowship.git.commit="${GIT_COMMIT}"
