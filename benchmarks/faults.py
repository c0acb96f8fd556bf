"""Faults: what people see when a dependency hangs, and how long stopping takes.

Run: ``python -m benchmarks.faults [--quick]`` (or ``python -m benchmarks --only faults``).

Everything goes through the real runner (``bot.runner.serve``: polling with its update slots,
the jobs, the shutdown) against the Bot API double, with the default settings unless a row says
otherwise. Latencies run from handing the update to the double until the bot's reply reaches it.

1. **LLM hung**: HOROSCOPE_GENERATOR=openai pointed at a listener that accepts and never
   answers (LLM_TIMEOUT 20 s, 3 attempts: about a minute per generation). New users each ask
   for a different cold sign at once; then as many again for the same signs.
2. **Postgres hung**: a proxy in front of Postgres stops forwarding. People known to Redis ask
   /today alone, then right behind a burst of new users (who need Postgres: all of them are
   queued for the update slots ahead of the warm ones); the same with Postgres healthy. Also:
   how long until the new users are told to try again.
3. **SIGTERM with Postgres hung** and counters buffered: seconds from the signal until serve()
   returned and the pools were closed, with the default Postgres timeouts and with timeouts of
   ten minutes (then only SHUTDOWN_TIMEOUT bounds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from benchmarks._env import (
    TOKEN,
    bench_database,
    bench_settings,
    delete_prefix,
    hung_redis,
    new_prefix,
    quiet_logs,
    redis_url,
    server_versions,
)
from benchmarks._util import (
    cli,
    machine_summary,
    machine_with_postgres,
    percentile,
    publish,
    render_table,
)
from bot.config import Settings
from bot.ops.stores import Stores, bot_engine, close_quietly
from bot.runner import serve
from cache import create_redis
from db.engine import create_session_factory
from db.types import Sign
from devtools.botapi import BotAPIServer

#: Postgres timeouts that never fire within a run: only the shutdown bound ends a wait.
NEVER = {
    "db_connect_timeout": 600.0,
    "db_command_timeout": 600.0,
    "db_statement_timeout": 600.0,
    "db_pool_timeout": 600.0,
}


class _Proxy:
    """TCP proxy to Postgres that can stop forwarding (accepts, holds every byte)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> _Proxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        await self.flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                await self.flowing.wait()
                dst.write(data)
                await dst.drain()
        dst.close()

    async def aclose(self) -> None:
        self.flowing.set()
        for w in list(self.writers):
            w.close()
        if self.server is not None:
            self.server.close()


class _Bot:
    """serve() on its own stores against the double, and a way to time replies."""

    def __init__(self, srv: BotAPIServer, settings: Settings, database_url: str) -> None:
        self.srv = srv
        self.settings = settings
        engine = bot_engine(database_url, settings)
        self.stores = Stores(
            engine=engine,
            session_factory=create_session_factory(engine),
            redis=create_redis(
                settings.redis_url or redis_url(),
                socket_timeout=settings.redis_socket_timeout,
                socket_connect_timeout=settings.redis_socket_timeout,
                max_connections=settings.redis_max_connections,
            ),
            database_url=database_url,
            redis_url=settings.redis_url or redis_url(),
        )
        self.stop = asyncio.Event()
        self.task: asyncio.Task[int] | None = None
        self.events = srv.subscribe(maxsize=100_000)
        self._first_reply: dict[int, float] = {}

    async def start(self) -> None:
        self.task = asyncio.create_task(serve(self.settings, self.stores, self.stop))
        await self.srv.wait_for(lambda: self.srv.bot().active_poll is not None, timeout=60)

    async def shutdown(self) -> float:
        """Signal stop; seconds until serve() returned and both pools were closed."""
        assert self.task is not None
        t0 = time.perf_counter()
        self.stop.set()
        await self.task
        self.srv.unsubscribe(self.events)
        await close_quietly("redis", self.stores.redis.aclose)
        await close_quietly("postgres", self.stores.engine.dispose)
        return time.perf_counter() - t0

    def send(self, user_id: int, text: str, lang: str = "en") -> float:
        self.srv.user(user_id, language_code=lang)
        self._first_reply.pop(user_id, None)
        sent = time.time()
        self.srv.send_text(user_id, text)
        return sent

    async def replies(self, sent: dict[int, float], timeout: float = 120) -> dict[int, float]:  # noqa: ASYNC109
        """Seconds from each send to the first reply in that chat."""
        out: dict[int, float] = {}
        async with asyncio.timeout(timeout):
            while len(out) < len(sent):
                event = await self.events.get()
                chat = event.get("chat_id")
                if event["type"] == "message_sent" and chat in sent and chat not in out:
                    out[chat] = event["at"] - sent[chat]
        return out

    async def ask(self, user_id: int, text: str) -> float:
        return (await self.replies({user_id: self.send(user_id, text)}))[user_id]


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
    }


async def _warm(bot: _Bot, users: list[int]) -> None:
    """/start <sign> and /today twice: user, text, picture and file_id all in Redis."""
    for i, uid in enumerate(users):
        sign = list(Sign)[i % 12].value
        for text in (f"/start {sign}", "/today", "/today"):
            await bot.ask(uid, text)


async def llm_hung(srv: BotAPIServer, db: str, prefix: str, n: int) -> dict[str, Any]:
    async with hung_redis() as hung:
        port = hung.rsplit(":", 1)[1].split("/")[0]
        settings = bench_settings(
            prefix + "l",
            telegram_api_url=srv.url,
            database_url=db,
            redis_url=redis_url(),
            horoscope_generator="openai",
            llm_base_url=f"http://127.0.0.1:{port}/v1",
            llm_api_key="sk-bench-never-answers-aaaaaaaaaaaa",
        )
        bot = _Bot(srv, settings, db)
        await bot.start()
        signs = list(Sign)[:n]
        first = await bot.replies(
            {1000 + i: bot.send(1000 + i, f"/start {sign}") for i, sign in enumerate(signs)}
        )
        again = await bot.replies(
            {2000 + i: bot.send(2000 + i, f"/start {sign}") for i, sign in enumerate(signs)}
        )
        shutdown = await bot.shutdown()
    return {
        "deadline_s": settings.horoscope_deadline,
        "llm_budget_s": settings.llm_timeout * 3,
        "first_askers": _stats(list(first.values())),
        "same_keys_again": _stats(list(again.values())),
        "shutdown_s": shutdown,
    }


async def postgres_hung(
    srv: BotAPIServer, db: str, prefix: str, warm_n: int, cold_n: int
) -> dict[str, Any]:
    url = make_url(db)
    proxy = await _Proxy(url.host or "127.0.0.1", url.port or 5432).start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    settings = bench_settings(
        prefix + "p", telegram_api_url=srv.url, database_url=proxied, redis_url=redis_url()
    )
    bot = _Bot(srv, settings, proxied)
    await bot.start()
    warm = list(range(3000, 3000 + warm_n))
    await _warm(bot, warm)
    out: dict[str, Any] = {}
    next_cold = 10_000
    try:
        for phase in ("healthy", "hung"):
            if phase == "hung":
                proxy.flowing.clear()
            alone = await bot.replies({uid: bot.send(uid, "/today") for uid in warm})
            cold = list(range(next_cold, next_cold + cold_n))
            next_cold += cold_n
            sent = {uid: bot.send(uid, "/start") for uid in cold}
            sent.update({uid: bot.send(uid, "/today") for uid in warm})
            took = await bot.replies(sent)
            out[phase] = {
                "warm_alone": _stats(list(alone.values())),
                "warm": _stats([took[u] for u in warm]),
                "cold": _stats([took[u] for u in cold]),
            }
    finally:
        proxy.flowing.set()
        await bot.shutdown()
        await proxy.aclose()
    return out


async def shutdown_hung(
    srv: BotAPIServer, db: str, prefix: str, overrides: dict[str, Any]
) -> dict[str, Any]:
    url = make_url(db)
    proxy = await _Proxy(url.host or "127.0.0.1", url.port or 5432).start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    settings = bench_settings(
        prefix + "s",
        telegram_api_url=srv.url,
        database_url=proxied,
        redis_url=redis_url(),
        **overrides,
    )
    bot = _Bot(srv, settings, proxied)
    await bot.start()
    await _warm(bot, [4000, 4001])
    proxy.flowing.clear()
    try:
        seconds = await bot.shutdown()
    finally:
        await proxy.aclose()
    return {"shutdown_timeout_s": settings.shutdown_timeout, "seconds": seconds}


@contextlib.asynccontextmanager
async def _double() -> AsyncIterator[BotAPIServer]:
    srv = BotAPIServer(tokens=[TOKEN])
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def run(*, quick: bool = False, write: bool = True) -> dict[str, Any]:
    prefix = new_prefix()
    cleaner = Redis.from_url(redis_url())
    try:
        with quiet_logs():
            async with bench_database() as db, _double() as srv:
                from db.engine import create_engine

                probe = create_engine(db)
                versions = await server_versions(cleaner, probe)
                await probe.dispose()
                llm = await llm_hung(srv, db, prefix, 4 if quick else 12)
                pg = await postgres_hung(srv, db, prefix, 10 if quick else 20, 20 if quick else 100)
                stop_default = await shutdown_hung(srv, db, prefix, {})
                stop_never = await shutdown_hung(srv, db, prefix + "n", dict(NEVER))
    finally:
        for p in ("l", "p", "s", "ns"):
            await delete_prefix(cleaner, prefix + p)
        await cleaner.aclose()
    result = {
        "machine": machine_with_postgres(versions),
        "quick": quick,
        "llm_hung": llm,
        "postgres_hung": pg,
        "shutdown": {"default timeouts": stop_default, "Postgres timeouts 10 min": stop_never},
    }
    if write:
        publish("faults", result, report)
    return result


HEADERS = ["situation", "what is timed", "n", "p50 ms", "p99 ms", "max ms"]


def rows(result: dict[str, Any]) -> list[list[Any]]:
    llm, pg = result["llm_hung"], result["postgres_hung"]
    out: list[list[Any]] = []

    def add(situation: str, what: str, s: dict[str, float]) -> None:
        out.append([situation, what, s["n"], s["p50_ms"], s["p99_ms"], s["max_ms"]])

    add("LLM hung", "answer to a cold sign (built-in text)", llm["first_askers"])
    add("LLM hung", "answer, same signs again", llm["same_keys_again"])
    n_cold = pg["hung"]["cold"]["n"]
    add("Postgres healthy", "warm /today (Redis only), alone", pg["healthy"]["warm_alone"])
    add("Postgres hung", "warm /today (Redis only), alone", pg["hung"]["warm_alone"])
    add("Postgres healthy", f"warm /today behind {n_cold} new users", pg["healthy"]["warm"])
    add("Postgres hung", f"warm /today behind {n_cold} new users", pg["hung"]["warm"])
    add("Postgres healthy", "new user /start (welcome)", pg["healthy"]["cold"])
    add("Postgres hung", "new user /start (try again)", pg["hung"]["cold"])
    for name, s in result["shutdown"].items():
        ms = s["seconds"] * 1000
        out.append(["Postgres hung", f"SIGTERM to exit ({name})", 1, ms, ms, ms])
    return out


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    llm = result["llm_hung"]
    return "\n".join(
        [
            f"faults  {machine_summary(m)}",
            f"HOROSCOPE_DEADLINE {llm['deadline_s']} s (the LLM's own budget: about"
            f" {llm['llm_budget_s']:.0f} s plus back-off); SHUTDOWN_TIMEOUT"
            f" {result['shutdown']['default timeouts']['shutdown_timeout_s']} s",
            "",
            render_table(HEADERS, rows(result)),
        ]
    )


def main() -> None:
    cli(run, __doc__)


if __name__ == "__main__":
    main()
