"""What one Redis client sends, counted on its connections: round trips and commands.

Tests assert "a warm update costs N round trips", the benchmarks report commands and trips per
update, and a debugging session may want to see what a code path really sends. Counting at the
connection (one ``send_packed_command`` = one round trip, carrying whatever was packed for it)
sees every path alike: single commands, redis-py pipelines, scripts and the engine's own
pipelines (cache/pipelining.py), which do not go through ``Redis.pipeline()``.

Only the given client is measured: its pool's ``get_connection`` is wrapped on the instance,
each connection it hands out is instrumented once, and so are the connections it already has
(idle or in use: cache/pipelining.py keeps a few between pipelines). What redis-py sends on
its own is not counted (the handshake of a connect or reconnect, the health-check PING on a
connection idle for ``health_check_interval``): it is not the code's traffic, and counting it
would make assertions depend on timing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from redis.asyncio import Redis

__all__ = ["RedisTraffic"]

_MARK = "_traffic_counter"


class RedisTraffic:
    """``trips``: one tuple per round trip, of the commands it carried (each ``args[:2]``)."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.trips: list[tuple[tuple[Any, ...], ...]] = []
        pool: Any = client.connection_pool
        original_get = pool.get_connection

        async def get_connection(*args: Any, **kwargs: Any) -> Any:
            conn = await original_get(*args, **kwargs)
            if getattr(conn, _MARK, None) is not self:
                self._instrument(conn)
            return conn

        pool.get_connection = get_connection
        # connections handed out earlier and kept (the engine's pipelines keep theirs)
        for conn in (
            *getattr(pool, "_available_connections", ()),
            *getattr(pool, "_in_use_connections", ()),
        ):
            self._instrument(conn)

    def _instrument(self, conn: Any) -> None:
        setattr(conn, _MARK, self)
        pending: list[tuple[Any, ...]] = []
        state = {"packing": False, "sending": False}
        pack_command = conn.pack_command
        pack_commands = conn.pack_commands
        send_packed = conn.send_packed_command

        def counted_pack_command(*args: Any) -> Any:
            if not state["packing"]:
                pending.append(args)
            return pack_command(*args)

        def counted_pack_commands(commands: Any) -> Any:
            commands = list(commands)
            pending.extend(tuple(cmd) for cmd in commands)
            state["packing"] = True
            try:
                return pack_commands(commands)
            finally:
                state["packing"] = False

        async def counted_send(command: Any, *args: Any, **kwargs: Any) -> Any:
            if state["sending"]:  # redis-py's own: a health-check PING, a handshake
                pending.clear()
                return await send_packed(command, *args, **kwargs)
            batch = tuple(cmd[:2] for cmd in pending)
            pending.clear()
            state["sending"] = True
            try:
                return await send_packed(command, *args, **kwargs)
            finally:
                state["sending"] = False
                self.trips.append(batch)

        def quiet(method: Any) -> Any:
            """What redis-py sends on its own (the handshake of a (re)connect, the health-check
            PING) runs as if nested in a send: not counted as the code's traffic."""

            async def run(*args: Any, **kwargs: Any) -> Any:
                outer = state["sending"]
                state["sending"] = True
                try:
                    return await method(*args, **kwargs)
                finally:
                    state["sending"] = outer

            return run

        conn.pack_command = counted_pack_command
        conn.pack_commands = counted_pack_commands
        conn.send_packed_command = counted_send
        conn.connect = quiet(conn.connect)
        conn.check_health = quiet(conn.check_health)

    @property
    def count(self) -> int:
        """Round trips so far."""
        return len(self.trips)

    @property
    def commands(self) -> list[tuple[Any, ...]]:
        """Every command sent so far, in order (``args[:2]``: name and first key)."""
        return [cmd for trip in self.trips for cmd in trip]

    @property
    def names(self) -> Counter[str]:
        """Commands sent so far, by name (upper case)."""
        return Counter(_name(cmd[0]) for cmd in self.commands)

    def reset(self) -> None:
        self.trips.clear()


def _name(value: Any) -> str:
    return (value.decode() if isinstance(value, bytes) else str(value)).upper()
