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
# SLIM_LIBRARIES=0 keeps the libraries whole (to debug inside the image). STRIP_SYMBOLS=0 slims them but leaves
# the compiled modules' symbol tables (about 27 MB; uvloop alone 11): the one part that needs a Debian mirror,
# for binutils' `strip`. Where none answers, this step fails, naming the way out, and nothing of it is cached:
# flowship builds again with STRIP_SYMBOLS=0 (docker_engine.build_serving), and a later build with a mirror
# strips again.
ARG SLIM_LIBRARIES=1
ARG STRIP_SYMBOLS=1
RUN if [ "$SLIM_LIBRARIES" = 1 ] && [ "$STRIP_SYMBOLS" = 1 ]; then \
      (apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils >/dev/null \
       && rm -rf /var/lib/apt/lists/*) \
      || { echo "flowship: binutils could not be installed (no Debian mirror answered): build with STRIP_SYMBOLS=0"; \
           exit 1; }; fi
RUN python3 -m venv /opt/venv
WORKDIR /build
COPY requirements.txt ./
COPY wheelhouse/ ./wheelhouse/
# Exactly the host's versions, so the pickled model and the image agree. Then drop what serving never
# reads: pip and the packages' own test suites (scipy, pandas, sklearn).
RUN /opt/venv/bin/python -m pip install --no-compile --no-index --find-links wheelhouse -r requirements.txt \
 && /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools \
 && find /opt/venv/lib -type d -name tests -prune -exec rm -rf {} +
# Slim libraries: no C headers, Cython or stub files (build-time only), no symbol tables in compiled modules,
# and bytecode without the source beside it (`compileall -b`: the .pyc where the .py was). A library's
# traceback still names its file and line, without the line's text. flowship's own code below keeps its sources.
RUN site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
 && if [ "$SLIM_LIBRARIES" = 1 ]; then \
      find "$site" -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.c' -o -name '*.cpp' -o -name '*.pyx' \
        -o -name '*.pxd' -o -name '*.pxi' -o -name '*.pyi' \) -delete \
      && if [ "$STRIP_SYMBOLS" = 1 ]; then \
           find "$site" -name '*.so' -not -path '*.libs/*' -exec strip --strip-unneeded {} +; fi \
      && /opt/venv/bin/python -m compileall -q -b -j 0 "$site" \
      && find "$site" -type f -name '*.py' -delete; \
    else /opt/venv/bin/python -m compileall -q -j 0 "$site"; fi
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
