"""One database unit of work per update (seed 003), lazy so a warm update never touches it.

The AsyncSession is created per update but runs no SQL and checks out no connection until a
repository uses it; an update answered from Redis therefore costs the pool nothing. At the end:
commit when the session actually began a transaction, rollback on error, and only after a
successful commit delete the cache entries the transaction made stale (db/unit_of_work.py's
``commit``, the one piece every writer uses): deleting before the commit would let a
concurrent reader put the old row back.

The whole update runs in ``db.guard.update_scope()``: every connection it takes (its own or one
of the cache loads it starts) counts against the Postgres bulkhead, so updates stuck on a hung
Postgres can never take every update slot from updates answered from Redis.

Handlers that write and then talk to Telegram or load other data call ``await uow.commit()``
in between: an open transaction pins a pooled connection, and a burst of updates each pinning
one while waiting for a shared load (which needs a connection of its own) would drain the pool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject
from sqlalchemy.ext.asyncio import AsyncSession

from db.guard import update_scope
from db.repositories import Repositories
from db.unit_of_work import commit

if TYPE_CHECKING:
    from bot.telegram.context import AppContext

__all__ = ["UnitOfWork", "UnitOfWorkMiddleware"]


class UnitOfWork:
    """The update's session plus "commit now" for handlers (``uow`` in handler kwargs)."""

    __slots__ = ("session",)

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def commit(self) -> None:
        """Commit what was written so far (if anything), then drop the stale cache entries."""
        await commit(self.session)

    async def rollback(self) -> None:
        if self.session.in_transaction():
            await self.session.rollback()


class UnitOfWorkMiddleware(BaseMiddleware):
    def __init__(self, app: AppContext) -> None:
        self.app = app

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        app = self.app
        session = app.session_factory()
        uow = UnitOfWork(session)
        data["session"] = session
        data["uow"] = uow
        data["repos"] = Repositories(session, app.data, app.generator)
        with update_scope():
            try:
                result = await handler(event, data)
                await uow.commit()
                return result
            except BaseException:
                await uow.rollback()
                raise
            finally:
                if _holds_anything(session):
                    await session.close()


def _holds_anything(session: AsyncSession) -> bool:
    """Whether ``close()`` has something to release: a transaction (hence a connection) or
    objects to expunge. A warm update never touched its session; closing it anyway costs a
    greenlet switch for nothing (~30 µs of the hot path)."""
    return session.in_transaction() or bool(session.identity_map) or bool(session.new)
