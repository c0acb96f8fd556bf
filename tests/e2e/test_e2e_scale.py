"""Three real bot processes (``python -m bot run``, webhook mode) on the run's Postgres and
Redis, behind a load balancer, one of them SIGKILLed in the middle of the traffic.

The load balancer is the Bot API double itself (it delivers each webhook attempt to the next
instance, round-robin), or a real nginx (tests/servers/loadbalancer.py) in front of them; the
double retries like Telegram either way (a refused or broken connection, a non-2xx).
Each instance calls the double through a base URL of its own (``/i1``, ``/i2``, ``/i3``), so
the test can tell their calls apart and hold the third one's: its handlers then wait for
Telegram's answer, in flight, when the SIGKILL comes.

The run:
1. 150 users (sign set) and 300 push subscribers due now; the instances start, each sets the
   webhook; the start-up precompute runs on all three.
2. Phase 1: every user sends /today (the sign pictures are uploaded once, file_ids shared).
3. Phase 2: instance 3's Bot API calls are held; the push subscribers become due and every
   user sends /today again. Once every phase-2 update is either answered or waiting inside
   instance 3 (its view counted, its sendPhoto held), and instance 3 holds push sends too,
   instance 3 is SIGKILLed.

What must hold, and does (the promises of bot/ops/webhook.py and jobs/push.py):
- every update is answered exactly once: each user has as many messages from phase 2 as from
  phase 1 (the held sends never happened), and Telegram got a 2xx for every update;
- an update in flight on the killed instance was redelivered, answered 503 while the dead
  instance's lease lived, then handled by another instance (never lost, never twice);
- views are exact: each /today counted once, plus once more for each /today that was
  interrupted on the killed instance after its view was counted (the documented cost of
  "handled again from the start"; the test knows exactly which ones: the held sendPhotos);
- every push subscriber got exactly one push, including those the dead instance had claimed
  (its claims expired and were taken over), each with ``allow_paid_broadcast``;
- the jobs ran once: every horoscope was generated once across the three start-up
  precomputes (leader lock + ON CONFLICT), and the view flush applied each batch once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import Horoscope, HoroscopeView, User
from devtools.botapi import BotAPIServer
from tests.e2e.conftest import TOKEN

pytestmark = [pytest.mark.e2e, pytest.mark.multiprocess, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "scale-test-secret"
USERS = range(20_001, 20_151)  # 150 people sending /today
PUSHED = range(30_001, 30_301)  # 300 push subscribers
PUSH_RATE = 100
SIGNS = (
    "aries", "taurus", "gemini", "cancer", "leo", "virgo",
    "libra", "scorpio", "sagittarius", "capricorn", "aquarius", "pisces",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """The child gets SIGKILL if pytest dies (Linux): no orphans even on a hard failure."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


class Instance:
    def __init__(self, n: int, env: dict[str, str], log: Path) -> None:
        self.n = n
        self.tag = f"i{n}"
        self.env = env
        self.log = log
        self.webhook_port = int(env["WEBHOOK_LISTEN"].rsplit(":", 1)[1])
        self.metrics_url = f"http://{env['METRICS_ADDR']}/metrics"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        out = self.log.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run",
            cwd=ROOT, env=self.env, stdout=out, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        out.close()

    async def metrics(self) -> dict[str, float]:
        """This instance's Prometheus samples, by ``name{labels}``."""
        async with aiohttp.ClientSession() as http, http.get(self.metrics_url) as resp:
            body = await resp.text()
        samples: dict[str, float] = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.asynccontextmanager
async def three_instances(
    server: BotAPIServer,
    database_url: str,
    redis_url: str,
    prefix: str,
    tmp: Path,
    *,
    ports: list[int],
    webhook_url: str | None,
) -> AsyncIterator[list[Instance]]:
    """``webhook_url`` None: the double is the load balancer (round-robin over ``ports``);
    else the URL of a real one in front of ``ports``."""
    assert server.url is not None
    instances = []
    for n, port in zip((1, 2, 3), ports, strict=True):
        mport = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV"))},
            "BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": f"{server.url}/i{n}",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CACHE_PREFIX": prefix,
            "RUN_MIGRATIONS": "false",
            "BOT_TIMEZONE": "UTC",
            "HOROSCOPE_GENERATOR": "template",
            "ENABLED_LANGS": "ru,en",
            "THROTTLE_RATE": "0.001",
            # With the double as the load balancer this URL is never connected to.
            "WEBHOOK_URL": webhook_url or "http://127.0.0.1:9/tg/hook",
            "WEBHOOK_LISTEN": f"127.0.0.1:{port}",
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_MAX_CONNECTIONS": "100",
            "WEBHOOK_LEASE_SECONDS": "2",
            "METRICS_ADDR": f"127.0.0.1:{mport}",
            "FLUSH_VIEWS_SECONDS": "1",
            "PUSH_SWEEP_SECONDS": "1",
            "PUSH_CLAIM_SECONDS": "3",
            "PUSH_RATE_PER_SECOND": str(PUSH_RATE),
            "PUSH_PAID_BROADCAST": "true",
            "PUSH_BATCH_SIZE": "10",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        instances.append(Instance(n, env, tmp / f"bot{n}.log"))
    if webhook_url is None:
        server.route_webhooks([f"http://127.0.0.1:{i.webhook_port}" for i in instances])
    try:
        await asyncio.gather(*(i.start() for i in instances))
        yield instances
    except BaseException:
        for i in instances:
            print(f"----- bot {i.n} (last lines) -----\n{i.tail()}")
        raise
    finally:
        for i in instances:
            if i.proc is not None and i.proc.returncode is None:
                i.proc.kill()
        for i in instances:
            if i.proc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(i.proc.wait(), 10)


async def seed(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                """
                INSERT INTO users (id, first_name, zodiac_sign, lang, push_enabled, push_time)
                SELECT g, 'U' || g, (CAST(:signs AS text[]))[g % 12 + 1],
                       CASE WHEN g % 2 = 0 THEN 'ru' ELSE 'en' END,
                       false, TIME '00:00'
                FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) AS g
                UNION ALL
                SELECT g, 'P' || g, (CAST(:signs AS text[]))[g % 12 + 1], 'en', false,
                       TIME '00:00'
                FROM generate_series(CAST(:c AS bigint), CAST(:d AS bigint)) AS g
                """
            ),
            {
                "signs": list(SIGNS),
                "a": USERS[0],
                "b": USERS[-1],
                "c": PUSHED[0],
                "d": PUSHED[-1],
            },
        )


async def eventually(check: Any, timeout: float = 60.0) -> None:  # noqa: ASYNC109
    """Wait for ``await check()`` to be true: for state outside the double (the instances'
    /metrics, Postgres), re-checked every 50 ms as BotAPIState.wait_for does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"{check.__name__} not reached within {timeout} s")
        await asyncio.sleep(0.05)


def answered(server: BotAPIServer, update_id: int) -> bool:
    return any(d.ok for d in server.deliveries_of(update_id))


@pytest.mark.parametrize("balancer", ["double", "nginx"])
async def test_three_instances_one_killed_mid_run(
    balancer: str,
    server: BotAPIServer,
    database_url: str,
    redis_url: str,
    key_prefix: str,
    engine: AsyncEngine,
    redis: Redis,
    db_clean: None,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    ports = [free_port() for _ in range(3)]
    webhook_url = None
    if balancer == "nginx":  # the real one, from tests/servers (skips when not installed)
        make = request.getfixturevalue("load_balancer_factory")
        webhook_url = make(ports, kind="nginx").url + "/tg/hook"
    await seed(engine)
    for uid in (*USERS, *PUSHED):
        server.user(uid, language_code="en")
    async with three_instances(
        server,
        database_url,
        redis_url,
        key_prefix,
        tmp_path,
        ports=ports,
        webhook_url=webhook_url,
    ) as bots:
        i3 = bots[2]
        # all three listen and have set the webhook (same URL, secret, update types)
        await server.wait_for(lambda: len(server.calls_to("setWebhook")) == 3, timeout=60)
        assert {c.tag for c in server.calls_to("setWebhook")} == {"i1", "i2", "i3"}
        assert server.bot().webhook_secret == SECRET

        # ---- jobs: the start-up precompute ran on all three, each horoscope generated once
        async def precompute_done() -> bool:
            runs = [await b.metrics() for b in bots]
            return all(
                any(k.startswith("bot_job_runs_total{") and 'task="precompute"' in k for k in m)
                for m in runs
            )

        await eventually(precompute_done)
        generated = 0.0
        for b in bots:
            samples = await b.metrics()
            generated += sum(
                v for k, v in samples.items() if k.startswith("bot_generations_total{")
            )
        async with engine.connect() as conn:
            horoscopes = await conn.scalar(select(func.count()).select_from(Horoscope))
        assert horoscopes and generated == horoscopes  # once each, across three instances

        # ---- phase 1: every user asks once; the pictures are uploaded once
        first = [server.send_text(uid, "/today")["update_id"] for uid in USERS]
        await server.wait_for(lambda: all(answered(server, u) for u in first), timeout=60)
        assert server.uploads() == len(SIGNS)
        phase1 = {uid: len(server.messages(uid)) for uid in USERS}
        assert min(phase1.values()) >= 1

        # ---- phase 2: hold instance 3, start the push, everyone asks again
        server.hold_calls(i3.tag)
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE users SET push_enabled = true WHERE id >= :a"), {"a": PUSHED[0]}
            )
        second = {server.send_text(uid, "/today")["update_id"]: uid for uid in USERS}

        def settled() -> bool:
            held = {p.get("chat_id") for m, p in server.held(i3.tag) if m.lower() == "sendphoto"}
            if not held & set(PUSHED):
                return False  # instance 3 must be in the middle of the push too
            return all(answered(server, u) or uid in held for u, uid in second.items())

        await server.wait_for(settled, timeout=60)
        # every phase-2 /today is answered or waiting inside instance 3: these will not change
        held_today = {
            p["chat_id"] for m, p in server.held(i3.tag) if p.get("chat_id") in set(USERS)
        }
        assert held_today
        assert i3.proc is not None
        i3.proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(i3.proc.wait(), 10) == -signal.SIGKILL
        # the calls it was waiting on die with it (the double sees the connections close);
        # its push sends among them: users it had claimed (it may have made more since)
        await server.wait_for(lambda: server.held_calls(i3.tag) == 0, timeout=30)
        server.release_calls(i3.tag)
        killed_calls = [c for c in server.calls if c.tag == i3.tag and c.outcome == "cancelled"]
        killed_chats = {c.params["chat_id"] for c in killed_calls}
        assert killed_chats & set(USERS) == held_today
        held_push = killed_chats & set(PUSHED)
        assert held_push

        # ---- every update answered, exactly once
        await server.wait_for(lambda: all(answered(server, u) for u in second), timeout=60)
        for uid in USERS:
            assert len(server.messages(uid)) == 2 * phase1[uid], uid
        interrupted = [u for u, uid in second.items() if uid in held_today]
        i3_port = f":{i3.webhook_port}/"
        for u in interrupted:
            tries = server.deliveries_of(u)
            if webhook_url is None:  # the double delivered to instance 3 itself
                assert any(i3_port in d.url and d.status is None for d in tries)
                assert i3_port not in tries[-1].url  # handled elsewhere, after
            else:  # nginx answered for the instance that died under its request
                assert tries[0].status == 502
            assert tries[-1].ok
            assert sum(d.ok for d in tries) == 1
        # the dead instance's lease made the others answer 503 first (never handled twice)
        assert any(d.status == 503 for u in interrupted for d in server.deliveries_of(u))
        assert all(sum(d.ok for d in server.deliveries_of(u)) == 1 for u in (*first, *second))

        # ---- every push subscriber got exactly one push, the dead instance's included
        await server.wait_for(
            lambda: all(len(server.messages(uid)) >= 1 for uid in PUSHED), timeout=60
        )

        # ... and recorded (the completion commits right after the send: wait for it)
        async def all_recorded() -> bool:
            async with engine.connect() as conn:
                left = await conn.scalar(
                    select(func.count())
                    .select_from(User)
                    .where(User.id >= PUSHED[0], User.last_push_date.is_(None))
                )
            return left == 0

        await eventually(all_recorded)
        pushes = Counter(
            m.chat_id for uid in PUSHED for m in server.messages(uid) if m.photo is not None
        )
        assert set(pushes) == set(PUSHED) and set(pushes.values()) == {1}
        push_sends = [
            c
            for c in server.calls_to("sendPhoto")
            if c.params.get("chat_id") in set(PUSHED) and c.outcome == "ok"
        ]
        assert len(push_sends) == len(PUSHED)
        assert all(c.params.get("allow_paid_broadcast") is True for c in push_sends)

        # ---- views exact: each /today once, plus the interrupted ones counted by the dead
        expected = len(first) + len(second) + len(held_today)

        async def flushed_views() -> int:
            async with engine.connect() as conn:
                total = await conn.scalar(select(func.sum(HoroscopeView.view_count)))
            return int(total or 0)

        async def views_flushed() -> bool:
            return await flushed_views() >= expected

        await eventually(views_flushed)
        assert await flushed_views() == expected
        # ... and nothing is left in the buffer to be counted a second time
        assert not await redis.exists(f"{key_prefix}:v1:buf:views")
