"""One database unit of work per update (seed 003), lazy so a warm update never touches it.

The AsyncSession is created per update but runs no SQL and checks out no connection until a
repository uses it; an update answered from Redis therefore costs the pool nothing. At the end:
commit when the session actually began a transaction, rollback on error, and only after a
successful commit delete the cache entries the transaction made stale
(``flush_invalidations``): deleting before the commit would let a concurrent reader put the
old row back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject

from cache import flush_invalidations
from db.repositories import Repositories

if TYPE_CHECKING:
    from bot.app import AppContext

__all__ = ["UnitOfWorkMiddleware"]


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
        data["session"] = session
        data["repos"] = Repositories(session, app.data, app.generator)
        try:
            result = await handler(event, data)
            if session.in_transaction():
                await session.commit()
                await flush_invalidations(session)
            return result
        except BaseException:
            if session.in_transaction():
                await session.rollback()
            raise
        finally:
            await session.close()
