# syntax=docker/dockerfile:1
# The image runs the installed package (bot, cache, db, jobs, with migrations/ and assets/ as
# package data), nothing from the source tree: development tooling (devtools/: embedded
# servers, the Bot API double, the playground), tests and benchmarks are not in it.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends gcc && rm -rf /var/lib/apt/lists/*
COPY requirements/prod.txt ./requirements/prod.txt
# Exact versions with hashes (the lock), then the package itself without re-resolving.
RUN python -m venv /venv && /venv/bin/pip install -r requirements/prod.txt
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cache ./cache
COPY db ./db
COPY jobs ./jobs
COPY migrations ./migrations
COPY assets ./assets
RUN /venv/bin/pip install --no-deps . && /venv/bin/python -c "import bot.cli, migrations, assets"

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PATH=/venv/bin:$PATH LOG_FORMAT=json
RUN useradd --system --uid 10001 --home-dir /app --create-home bot
WORKDIR /app
COPY --from=build /venv /venv
USER bot
# 9101: /metrics, /healthz, /readyz; 8081: the webhook (WEBHOOK_LISTEN, behind nginx).
EXPOSE 9101 8081
# Migrations run at start (RUN_MIGRATIONS=true, under a Postgres advisory lock).
CMD ["python", "-m", "bot", "run"]
