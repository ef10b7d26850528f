# One image for the classifier and the monitor (the edge runs on the device itself,
# see docs/raspberry-pi.md). Build: docker compose build
FROM python:3.11-slim-bookworm
# OpenCV's wheels need libGL/glib at import time
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bench bench/
COPY bus bus/
COPY classifier classifier/
COPY config config/
COPY edge edge/
COPY facewire facewire/
COPY models models/
COPY monitor monitor/
RUN pip install --no-cache-dir . && facewire models prepare all --models-dir /app/models
ENV FACEWIRE_MODELS_DIR=/app/models
