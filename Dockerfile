# fedradval container images: one file, two targets.
#
#   docker build --target site        -t fedradval-site:0.1.0        .
#   docker build --target coordinator -t fedradval-coordinator:0.1.0 .
#
# Both run as the unprivileged user `fedradval` (uid 10001) with /data (read-only inputs), /keys and /work
# as volumes; `docker run --rm fedradval-site:0.1.0 --version` is the smoke test. Every Python package is
# pinned by deploy/requirements-<role>.lock (regenerate with deploy/update-locks.sh). Compilers, pip's
# caches and anything in deploy/build-support/ stay in the build stages: the final images hold Debian's
# python3 and one virtual environment, /opt/fedradval, copied from the build stage.
# Written for the classic builder as well as BuildKit (no RUN --mount, no heredocs). The classic builder
# builds every stage above the target, so each image's build stage sits just above it.
#
# Build arguments:
#   BASE_IMAGE   a Debian 12 (bookworm) image; deploy/build-images.sh --local-base makes one without a registry
#   TORCH_INDEX  where the CPU build of torch comes from (a plain `pip install torch` pulls several GB of CUDA)

ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- runtime: Debian's Python, nothing else
FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------- the project's source, as the wheel takes it
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY site_client /src/site_client
COPY coordinator /src/coordinator
COPY harmonisation /src/harmonisation
COPY protocols /src/protocols
COPY fedmath /src/fedmath
COPY flowerglue /src/flowerglue
COPY demo /src/demo

# ---------------------------------------------------------------- build: compilers + pip (never shipped)
FROM runtime AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# pyradiomics-bhklab is published as source only: its C extensions need gcc and the Python headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv python3-dev gcc g++ libc6-dev \
 && rm -rf /var/lib/apt/lists/*
# Optional local aids for building behind a re-signing proxy or offline (see deploy/build-support/README.md):
# ca-certificates.crt (trusted by pip in this stage only) and wheels/ (searched before the index).
COPY deploy/build-support/ /build-support/
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=180 \
    PIP_EXTRA_INDEX_URL=${TORCH_INDEX} PIP_FIND_LINKS=/build-support/wheels
RUN python3 -m venv /opt/fedradval \
 && if [ -f /build-support/ca-certificates.crt ]; then \
        printf '[global]\ncert = /build-support/ca-certificates.crt\n' > /etc/pip.conf; fi \
 && /opt/fedradval/bin/pip install --quiet --upgrade "pip>=24" "setuptools>=68" wheel

FROM build AS build-site
COPY deploy/requirements-site.lock /tmp/requirements.lock
# The pinned dependencies first (their own layer: a code change does not reinstall torch) ...
RUN /opt/fedradval/bin/pip install --quiet -r /tmp/requirements.lock
# ... then the project from its own source; -c keeps every pin, pip check proves the set is complete.
COPY --from=source /src /src
RUN /opt/fedradval/bin/pip install --quiet --no-build-isolation -c /tmp/requirements.lock "/src[site]" \
 && /opt/fedradval/bin/pip check

# ---------------------------------------------------------------- common runtime settings
FROM runtime AS app
RUN groupadd --system --gid 10001 fedradval \
 && useradd --system --uid 10001 --gid 10001 --home-dir /work --no-create-home --shell /usr/sbin/nologin fedradval \
 && mkdir -p /data /keys /work \
 && chown fedradval:fedradval /data /keys /work \
 && chmod 0700 /keys /work
# No phone-home, no code installed at run time (the study code is this image's package).
ENV PATH=/opt/fedradval/bin:$PATH \
    FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true \
    HOME=/work PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /work
VOLUME ["/data", "/keys", "/work"]

# ---------------------------------------------------------------- site: what a hospital runs
FROM app AS site
COPY --from=build-site /opt/fedradval /opt/fedradval
USER fedradval
LABEL org.opencontainers.image.title="fedradval-site" \
      org.opencontainers.image.description="fedradval site client: check, extract, join a federated study" \
      org.opencontainers.image.licenses="Apache-2.0"
# tini reaps the SuperNode's and ClientApps' children and forwards SIGTERM (docker stop) to site-client.
ENTRYPOINT ["tini", "--", "site-client"]
CMD ["--help"]

# ---------------------------------------------------------------- coordinator: SuperLink, runs, MLflow
FROM build AS build-coordinator
COPY deploy/requirements-coordinator.lock /tmp/requirements.lock
RUN /opt/fedradval/bin/pip install --quiet -r /tmp/requirements.lock
COPY --from=source /src /src
RUN /opt/fedradval/bin/pip install --quiet --no-build-isolation -c /tmp/requirements.lock "/src[coordinator]" \
 && /opt/fedradval/bin/pip check

FROM app AS coordinator
COPY --from=build-coordinator /opt/fedradval /opt/fedradval
USER fedradval
LABEL org.opencontainers.image.title="fedradval-coordinator" \
      org.opencontainers.image.description="fedradval coordinator: SuperLink, study runs, MLflow reports" \
      org.opencontainers.image.licenses="Apache-2.0"
# SuperLink (coordinator start --port, default 8000) and MLflow
EXPOSE 8000 5000
ENTRYPOINT ["tini", "--", "coordinator"]
CMD ["--help"]
