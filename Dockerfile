# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends gcc && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cache ./cache
COPY db ./db
COPY jobs ./jobs
RUN python -m venv /venv && /venv/bin/pip install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PATH=/venv/bin:$PATH LOG_FORMAT=json
RUN useradd --system --uid 10001 --home-dir /app bot
WORKDIR /app
COPY --from=build /venv /venv
COPY --chown=bot:bot pyproject.toml ./
COPY --chown=bot:bot bot ./bot
COPY --chown=bot:bot cache ./cache
COPY --chown=bot:bot db ./db
COPY --chown=bot:bot jobs ./jobs
COPY --chown=bot:bot migrations ./migrations
COPY --chown=bot:bot assets ./assets
USER bot
EXPOSE 9101
# Migrations run at start (RUN_MIGRATIONS=true, under a Postgres advisory lock).
CMD ["python", "-m", "bot", "run"]
