"""Real faults for tests: a TCP proxy that forwards, hangs or resets, and a fake LLM that hangs.

Both run on the test's event loop on 127.0.0.1 (port 0), so a test can put them between the bot
and a real server and change their behaviour at any moment:

* ``FaultProxy`` in front of Postgres (or Redis): ``hang()`` stops forwarding in both directions
  (new connections are accepted and never reach the server, bytes on open ones are held back:
  a partitioned network), ``resume()`` lets everything through again, held bytes included;
  ``reset()`` closes every connection (the server died) and ``refuse()`` closes new ones at
  once. ``accepted`` counts connections, so a test can see that a breaker stopped trying.
* ``FakeLLM``: an OpenAI-compatible ``/chat/completions`` that answers at once, or hangs
  until ``release()`` (a model that never answers). ``started`` is set when a request arrives.
* ``ConnectionWatch``: which asyncio task holds which pooled Postgres connection right now (pool
  checkout/checkin events), to prove that nobody talks to Telegram or an LLM while holding one.

Small on purpose; the shared servers of tests/servers/ will replace them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.servers.fake_llm import GOOD_EN

__all__ = ["GOOD_TEXT", "ConnectionWatch", "FakeLLM", "FaultProxy"]


class FaultProxy:
    """A TCP proxy to ``target_host:target_port`` whose behaviour the test switches."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.accepted = 0
        self._accepted_changed = asyncio.Condition()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url_for(self, url: str) -> str:
        """``url`` (postgresql://... or redis://...) with host and port replaced by ours."""
        from sqlalchemy.engine import make_url

        if url.startswith("redis"):
            scheme, _, rest = url.partition("://")
            _, _, path = rest.partition("/")
            return f"{scheme}://127.0.0.1:{self.port}/{path}"
        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(False)

    # -------------------------------------------------------------- switches

    def hang(self) -> None:
        """Accept, never forward (open connections stall too)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._refusing = False
        self._flowing.set()

    def refuse(self) -> None:
        """New connections are closed at once (open ones are left alone)."""
        self._refusing = True

    def reset(self) -> None:
        """Close every open connection, both sides."""
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    # -------------------------------------------------------------- plumbing

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_accepted(self, n: int) -> None:
        """Until ``n`` connections have been accepted in all."""
        async with self._accepted_changed:
            await self._accepted_changed.wait_for(lambda: self.accepted >= n)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        async with self._accepted_changed:
            self._accepted_changed.notify_all()
        if self._refusing:
            writer.close()
            return
        self._writers.add(writer)
        await self._flowing.wait()  # hung: the client waits for a server that never answers
        if writer.is_closing():
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        self._spawn(self._pipe(reader, up_writer, writer))
        self._spawn(self._pipe(up_reader, writer, up_writer))

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, other: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (dst, other):
                w.close()
                self._writers.discard(w)

    async def aclose(self) -> None:
        self.resume()
        if self._server is not None:
            self._server.close()
        self.reset()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


GOOD_TEXT = GOOD_EN  # one good answer for every fake model


class FakeLLM:
    """``POST /chat/completions``: a good answer, or (``hang=True``) none until released."""

    def __init__(self, *, hang: bool = False, text: str = GOOD_TEXT) -> None:
        self.hang = hang
        self.text = text
        self.requests = 0
        self.started = asyncio.Event()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def release(self) -> None:
        """Let hung requests answer (with the good text)."""
        self._release.set()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.started.set()
        if self.hang:
            await self._release.wait()
        return web.json_response(
            {
                "model": "fake-llm",
                "choices": [
                    {
                        "message": {"role": "assistant", "content": self.text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 60},
            }
        )

    async def start(self) -> FakeLLM:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def aclose(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()


class ConnectionWatch:
    """Connections checked out per asyncio task, from the engine's pool events."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._owner: dict[Any, asyncio.Task[Any] | None] = {}
        self.max_checked_out = 0
        event.listen(engine.sync_engine, "checkout", self._out)
        event.listen(engine.sync_engine, "checkin", self._in)

    def _out(self, _dbapi: Any, record: Any, _proxy: Any) -> None:
        self._owner[record] = asyncio.current_task()
        self.max_checked_out = max(self.max_checked_out, len(self._owner))

    def _in(self, _dbapi: Any, record: Any) -> None:
        self._owner.pop(record, None)

    def held_by(self, task: asyncio.Task[Any] | None) -> int:
        return sum(1 for owner in self._owner.values() if owner is task)

    def held_by_anyone(self) -> int:
        return len(self._owner)

    def held_here(self) -> int:
        """Connections the current task holds."""
        return self.held_by(asyncio.current_task())

    def close(self) -> None:
        event.remove(self.engine.sync_engine, "checkout", self._out)
        event.remove(self.engine.sync_engine, "checkin", self._in)
