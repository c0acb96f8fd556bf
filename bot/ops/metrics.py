"""Prometheus metrics of the bot process, on one registry of its own.

Defined in one place so handlers, the image sender, generators and jobs increment the same
objects, and so tests can read them back (`REGISTRY.get_sample_value`). The cache engine's
metrics (cache.metrics.CacheMetrics) register on the same registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

UPDATES = Counter(
    "bot_updates_total",
    "Telegram updates handled, by update type and outcome (ok, ignored, throttled, blocked,"
    " gone, rate_limited, error), each update once.",
    ["type", "outcome"],
    registry=REGISTRY,
)
HANDLER_SECONDS = Histogram(
    "bot_handler_seconds",
    "Time from an update's arrival to its handler's end, by update type.",
    ["type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
IMAGE_SENDS = Counter(
    "bot_image_sends_total",
    "Pictures sent, by how: upload (a new file) or file_id (a cached Telegram file).",
    ["method"],
    registry=REGISTRY,
)
FILE_ID_FALLBACKS = Counter(
    "bot_file_id_fallbacks_total",
    "Cached file_ids Telegram rejected, forgotten and replaced by an upload.",
    registry=REGISTRY,
)
GENERATIONS = Counter(
    "bot_generations_total",
    "Horoscope generations by generator and outcome (ok, error, fallback).",
    ["generator", "outcome"],
    registry=REGISTRY,
)
GENERATION_TOKENS = Counter(
    "bot_generation_tokens_total",
    "Tokens used by generators that report them, by kind (prompt, completion).",
    ["generator", "kind"],
    registry=REGISTRY,
)
JOB_RUNS = Counter(
    "bot_job_runs_total",
    "Scheduled job runs by task (the job's name) and outcome (ok, failed, skipped: another leads).",
    ["task", "outcome"],
    registry=REGISTRY,
)
JOB_SECONDS = Histogram(
    "bot_job_seconds",
    "Duration of job runs, by task (the job's name).",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
JOB_LAST_SUCCESS = Gauge(
    "bot_job_last_success_timestamp_seconds",
    "Unix time of each job's last successful run, by task (the job's name).",
    ["task"],
    registry=REGISTRY,
)
PUSHES = Counter(
    "bot_push_total",
    "Daily push deliveries by outcome (sent, failed, blocked, retry_after).",
    ["outcome"],
    registry=REGISTRY,
)
DEPENDENCY_FAILURES = Counter(
    "bot_dependency_failures_total",
    "Failures attributed to a dependency (redis, postgres), by dependency and reason; the log"
    " says only when one goes down and when it is back.",
    ["dependency", "reason"],
    registry=REGISTRY,
)
DEPENDENCY_UP = Gauge(
    "bot_dependency_up",
    "1 while a dependency answers, 0 from its first failure until it answers again.",
    ["dependency"],
    registry=REGISTRY,
)
DB_REJECTED = Counter(
    "bot_db_rejected_total",
    "Postgres checkouts refused at once, by reason (open: breaker, busy: bulkhead full, pool:"
    " no free connection in time, connect/timeout/lost: Postgres did not answer).",
    ["reason"],
    registry=REGISTRY,
)
DB_BREAKER_STATE = Gauge(
    "bot_db_breaker_state",
    "State of the Postgres circuit breaker (0 closed, 1 open, 2 half-open).",
    registry=REGISTRY,
)
WEBHOOK_REQUESTS = Counter(
    "bot_webhook_requests_total",
    "Webhook requests by outcome: handled, duplicate (already handled: 200, skipped), busy"
    " (in progress elsewhere: 503, Telegram retries), unauthorized (wrong secret: 401),"
    " bad_request, unchecked (handled without the Redis dedupe: Redis unavailable).",
    ["outcome"],
    registry=REGISTRY,
)
