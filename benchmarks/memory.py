"""Redis memory per cached user, file_id and horoscope, extrapolated to 100,000 users.

Run: ``python -m benchmarks.memory [--quick]``. Real entries written by the repositories under
our own prefix: N users (realistic Telegram profiles) read through ``UserRepository.get`` and
their last-seen stamps through the repository's side command, 12 signs x 2 languages x 3 dates
of horoscopes through ``HoroscopeRepository.get_or_generate`` (the built-in generator's real
texts, one view each), and 50 file_ids saved through ``ImageAssetRepository``. Each key's size
is ``MEMORY USAGE key SAMPLES 0`` (all of a hash's fields counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import random
import time
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import text

from benchmarks._env import (
    BOT_ID,
    bench_settings,
    database_or_bench,
    delete_prefix,
    new_prefix,
    quiet_logs,
    redis_url,
    server_versions,
)
from benchmarks._util import cli, machine_with_postgres, publish, render_table
from bot.domain.generation.template import TemplateGenerator
from cache import CacheAside, CacheMetrics, KeySpace, create_redis
from db.engine import create_engine, create_session_factory
from db.repositories import (
    DataContext,
    HoroscopeRepository,
    ImageAssetRepository,
    UserRepository,
)
from db.types import Lang, Sign
from db.unit_of_work import commit

TARGET_USERS = 100_000
FILE_IDS = 50
FIRST = ("Анна", "Maria", "Алексей", "John", "Екатерина", "Li", "Дмитрий", "Sophie", "Ольга")
LAST = (None, "Иванова", "Smith", None, "Kowalski", None, "Петров")


def _profile(rng: random.Random, uid: int) -> dict[str, Any]:
    return {
        "id": uid,
        "is_bot": False,
        "first_name": rng.choice(FIRST),
        "last_name": rng.choice(LAST),
        "username": rng.choice((None, f"user_{uid}", f"astro_fan_{uid % 9973}")),
        "language_code": rng.choice(("ru", "ru", "en", "uk", None)),
        "is_premium": rng.random() < 0.1,
        "zodiac_sign": rng.choice(list(Sign)).value,
        "lang": rng.choice(("ru", "en", None)),
        "timezone": rng.choice((None, None, "Europe/Moscow", "Asia/Yekaterinburg")),
        "push_enabled": rng.random() < 0.5,
    }


async def _usage(redis: Redis, keys: list[bytes]) -> list[int]:
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
    return [int(x or 0) for x in await pipe.execute()]


async def run(
    *,
    quick: bool = False,
    n_users: int | None = None,
    write: bool = True,
    database_url: str | None = None,
) -> dict[str, Any]:
    n_users = n_users or (300 if quick else 2000)
    prefix = new_prefix()
    url = redis_url()
    rng = random.Random(42)
    with quiet_logs():
        async with contextlib.AsyncExitStack() as stack:
            db_url = await database_or_bench(stack, database_url)
            settings = bench_settings(prefix, database_url=db_url, redis_url=url)
            engine = create_engine(db_url)
            stack.push_async_callback(engine.dispose)
            client = create_redis(url, socket_timeout=2.0, socket_connect_timeout=2.0)
            stack.push_async_callback(client.aclose)
            stack.push_async_callback(delete_prefix, client, prefix)
            cache = CacheAside(client, metrics=CacheMetrics(CollectorRegistry()), op_timeout=2.0)
            stack.push_async_callback(cache.aclose)
            ctx = DataContext(
                cache=cache,
                keys=KeySpace(prefix, settings.cache_schema_version),
                session_factory=create_session_factory(engine),
                tz=settings.tz,
            )
            versions = await server_versions(client, engine)
            async with engine.begin() as conn:
                await conn.execute(text("TRUNCATE users, image_assets, horoscopes"))
                first_id = 6_000_000
                profiles = [_profile(rng, first_id + i) for i in range(n_users)]
                await conn.execute(
                    text(
                        """
                        INSERT INTO users (id, is_bot, first_name, last_name, username,
                            language_code, is_premium, zodiac_sign, lang, timezone, push_enabled)
                        VALUES (:id, :is_bot, :first_name, :last_name, :username,
                            :language_code, :is_premium, :zodiac_sign, :lang, :timezone,
                            :push_enabled)
                        """
                    ),
                    profiles,
                )
            async with ctx.session_factory() as session:
                users = UserRepository(session, ctx)
                now = time.time()
                for start in range(0, n_users, 100):
                    chunk = profiles[start : start + 100]
                    await asyncio.gather(*(users.get(p["id"]) for p in chunk))
                    await cache.send(
                        *(users.last_seen_command(p["id"], now + i) for i, p in enumerate(chunk))
                    )
                horoscopes = HoroscopeRepository(ctx, TemplateGenerator())
                today = ctx.today()
                dates = [today + dt.timedelta(days=d) for d in (-1, 0, 1)]
                for date in dates:
                    for sign in Sign:
                        for lang in (Lang.RU, Lang.EN):
                            await horoscopes.get_or_generate(sign, date, lang, count_view=True)
                images = ImageAssetRepository(session, ctx)
                for i in range(FILE_IDS):
                    asset = (
                        f"cosmic/cosmic-{i:02d}.jpg" if i >= 12 else f"signs/{list(Sign)[i]}.jpg"
                    )
                    seed = hashlib.sha256(asset.encode()).hexdigest()
                    ref = await images.save(
                        BOT_ID,
                        asset,
                        "AgACAgIAAxkDAAI" + seed[:64],
                        "AQAD" + seed[:12],
                        hashlib.sha256(seed.encode()).hexdigest(),
                    )
                    await commit(session)
                    await images.cache_saved(BOT_ID, asset, ref)
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
            sizes = dict(zip(keys, await _usage(client, keys), strict=True))
            encodings = {}
            for name in ("buf:lastseen", "buf:views"):
                key = f"{prefix}:{settings.cache_schema_version}:{name}".encode()
                encodings[name] = (await client.object("ENCODING", key) or b"?").decode()
    result = _summarize(sizes, prefix, settings.cache_schema_version, n_users, encodings)
    result.update(
        {
            "machine": machine_with_postgres(versions),
            "quick": quick,
        }
    )
    if write:
        publish("memory", result, report)
    return result


def _summarize(
    sizes: dict[bytes, int], prefix: str, version: str, n_users: int, encodings: dict[str, str]
) -> dict[str, Any]:
    groups: dict[str, list[int]] = {}
    buffers: dict[str, int] = {}
    head = f"{prefix}:{version}:"
    for key, size in sizes.items():
        name = key.decode().removeprefix(head)
        ns = name.split(":", 1)[0]
        if ns == "buf":
            buffers[name] = size
        else:
            groups.setdefault(ns, []).append(size)
    per = {ns: {"keys": len(v), "bytes_avg": sum(v) / len(v)} for ns, v in groups.items()}
    lastseen = buffers.get("buf:lastseen", 0)
    per_user_lastseen = lastseen / n_users
    user = per.get("user", {}).get("bytes_avg", 0.0)
    horo = per.get("horoscope", {}).get("bytes_avg", 0.0)
    fid = per.get("fileid", {}).get("bytes_avg", 0.0)
    views = buffers.get("buf:views", 0)
    parts = {
        "users (cache entry)": TARGET_USERS * user,
        "users (last-seen buffer field)": TARGET_USERS * per_user_lastseen,
        "horoscopes (12 x 2 x 3)": 72 * horo,
        f"file_ids ({FILE_IDS})": FILE_IDS * fid,
        "view buffer (3 days)": views,
    }
    return {
        "users_measured": n_users,
        "per_key": per,
        "buffers": buffers,
        "buffer_encodings": encodings,
        "per_user_bytes": user + per_user_lastseen,
        "per_user_lastseen_bytes": per_user_lastseen,
        "extrapolated_100k": {"parts": parts, "total_bytes": sum(parts.values())},
    }


def rows(result: dict[str, Any]) -> list[list[Any]]:
    per = result["per_key"]
    out = []
    for ns, label in (("user", "user"), ("horoscope", "horoscope"), ("fileid", "file_id")):
        if ns in per:
            out.append([label, per[ns]["keys"], per[ns]["bytes_avg"]])
    out.append(
        [
            "last-seen stamp (hash field, per user)",
            result["users_measured"],
            result["per_user_lastseen_bytes"],
        ]
    )
    return out


def extrapolation_rows(result: dict[str, Any]) -> list[list[Any]]:
    ex = result["extrapolated_100k"]
    out = [[name, b / 1024 / 1024] for name, b in ex["parts"].items()]
    out.append(["total", ex["total_bytes"] / 1024 / 1024])
    return out


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    return "\n".join(
        [
            f"redis memory  redis={m.get('redis')} (MEMORY USAGE ... SAMPLES 0 on real entries)",
            "",
            render_table(["entry", "keys measured", "bytes each (avg)"], rows(result)),
            "",
            f"Extrapolated to {TARGET_USERS:,} users",
            render_table(["part", "MiB"], extrapolation_rows(result)),
            f"buffer encodings: {result['buffer_encodings']}",
        ]
    )


def main() -> None:
    cli(run, __doc__)


if __name__ == "__main__":
    main()
