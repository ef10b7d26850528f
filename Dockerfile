# One image for the classifier and the monitor (and an edge with a USB webcam, the
# compose profile "edge"; a Raspberry Pi runs it natively: docs/raspberry-pi.md).
#   docker compose build
# Builder: the wheels into a virtualenv, and the model files (fetched and checked
# against their pinned hashes by `facewire models prepare`). Runtime: that virtualenv
# alone, on a slim base, as an unprivileged user.

FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# OpenCV's wheel links libGL/glib at import; preparing the models imports it
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/facewire
ENV PATH=/opt/facewire/bin:$PATH FACEWIRE_MODELS_DIR=/opt/facewire/models
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bench bench/
COPY bus bus/
COPY classifier classifier/
COPY config config/
COPY edge edge/
COPY facewire facewire/
COPY models models/
COPY monitor monitor/
RUN pip install . \
    && mkdir -p "$FACEWIRE_MODELS_DIR" \
    && facewire models prepare all \
    && facewire models list

FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/facewire \
       --shell /usr/sbin/nologin facewire \
    && mkdir -p /var/lib/facewire /cache \
    && chown facewire:facewire /var/lib/facewire /cache
COPY --from=builder /opt/facewire /opt/facewire
ENV PATH=/opt/facewire/bin:$PATH \
    FACEWIRE_MODELS_DIR=/opt/facewire/models \
    PYTHONUNBUFFERED=1
USER facewire
WORKDIR /var/lib/facewire
CMD ["facewire", "--help"]
