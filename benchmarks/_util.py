"""Shared helpers for benchmarks: percentiles, tables, JSON results, machine description, the
command line of a benchmark module."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from bot.ops import runtime

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank-with-interpolation percentile (p in 0..100); nan for no values."""
    if not values:
        return float("nan")
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    k = (len(data) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def summarize(latencies_s: Sequence[float]) -> dict[str, float]:
    """ops/s (sequential), p50/p99/max in microseconds."""
    total = sum(latencies_s)
    return {
        "n": len(latencies_s),
        "ops_per_s": len(latencies_s) / total if total else float("nan"),
        "p50_us": percentile(latencies_s, 50) * 1e6,
        "p99_us": percentile(latencies_s, 99) * 1e6,
        "max_us": max(latencies_s) * 1e6 if latencies_s else float("nan"),
        "mean_us": statistics.fmean(latencies_s) * 1e6 if latencies_s else float("nan"),
    }


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table with right-aligned columns (numbers) and left-aligned first column."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(parts))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def _loop_name() -> str:
    """The event loop the benchmarks run on: the bot's (bot/ops/runtime.py), uvloop if installed."""
    return "uvloop" if runtime.event_loop_factory() is not None else "asyncio"


def machine(redis_version: str | None = None) -> dict[str, Any]:
    """CPU model, cores, Python, OS and (when given) the Redis server version."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "loop": _loop_name(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if redis_version:
        info["redis"] = redis_version
    with contextlib.suppress(OSError):
        info["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    return info


def machine_with_postgres(versions: dict[str, str]) -> dict[str, Any]:
    """``machine`` with the Redis and Postgres versions of ``_env.server_versions``."""
    return {**machine(versions["redis"]), "postgres": versions["postgres"]}


def machine_summary(m: dict[str, Any], *, postgres: bool = True) -> str:
    """``cpu=... cores=... python=... loop=... redis=...`` (and ``postgres=...``): a report's
    first line."""
    line = (
        f"cpu={m['cpu']} cores={m['cores']} python={m['python']} loop={m.get('loop')} "
        f"redis={m.get('redis')}"
    )
    return f"{line} postgres={m.get('postgres')}" if postgres else line


def write_json(name: str, data: dict[str, Any]) -> Path:
    """Write results atomically to benchmarks/results/<name>.json and return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    return path


def publish(name: str, result: dict[str, Any], report: Callable[[dict[str, Any]], str]) -> None:
    """Print the report, write benchmarks/results/<name>.json and say where."""
    print(report(result))
    print(f"\nwritten: {write_json(name, result)}")


def cli(run: Callable[..., Coroutine[Any, Any, Any]], description: str | None) -> None:
    """``python -m benchmarks.<module> [--quick]``: ``run(quick=...)`` on the bot's event loop."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runtime.run(run(quick=args.quick))


def render_markdown(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The same table as ``render_table``, as GitHub markdown (numbers right-aligned)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    lines = [
        "| " + " | ".join(str(h) for h in headers) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    lines.extend("| " + " | ".join(row) + " |" for row in cells)
    return "\n".join(lines)
