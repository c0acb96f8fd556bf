"""One database unit of work per update (seed 003), lazy so a warm update never touches it.

The AsyncSession is created on first use (a repository that writes asks the unit of work for
it): an update answered from Redis builds no session, runs no SQL and checks out no connection,
so it costs the pool nothing. At the end:
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
from functools import cached_property
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.guard import update_scope
from db.repositories import (
    DataContext,
    ImageAssetRepository,
    Repositories,
    UserRepository,
)
from db.types import HoroscopeGenerator
from db.unit_of_work import commit

if TYPE_CHECKING:
    from bot.telegram.context import AppContext

__all__ = ["UnitOfWork", "UnitOfWorkMiddleware", "UnitRepositories"]


class UnitOfWork:
    """The update's session, created on first use, plus "commit now" for handlers (``uow`` in
    handler kwargs)."""

    __slots__ = ("_factory", "_session")

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        """The update's session (created now if nothing asked for it yet)."""
        session = self._session
        if session is None:
            session = self._session = self._factory()
        return session

    def get_session(self) -> AsyncSession:
        return self.session

    @property
    def started(self) -> bool:
        """Whether anything asked for the session (a warm update never does)."""
        return self._session is not None

    async def commit(self) -> None:
        """Commit what was written so far (if anything), then drop the stale cache entries."""
        if self._session is not None:
            await commit(self._session)

    async def rollback(self) -> None:
        session = self._session
        if session is not None and session.in_transaction():
            await session.rollback()

    async def close(self) -> None:
        session = self._session
        if session is not None and _holds_anything(session):
            await session.close()


class UnitRepositories(Repositories):
    """The repositories of one update, on its unit of work: the session is created only when
    a repository writes (reads go through the cache and open their own short sessions)."""

    def __init__(self, uow: UnitOfWork, ctx: DataContext, generator: HoroscopeGenerator) -> None:
        # No session handed over: ``session`` below asks the unit of work when someone needs it.
        self._uow = uow
        self.ctx = ctx
        self._generator = generator

    @property
    def session(self) -> AsyncSession:
        return self._uow.session

    @session.setter
    def session(self, value: AsyncSession) -> None:
        raise AttributeError("the unit of work owns the session")

    @cached_property
    def users(self) -> UserRepository:
        return UserRepository(self._uow.get_session, self.ctx)

    @cached_property
    def images(self) -> ImageAssetRepository:
        return ImageAssetRepository(self._uow.session, self.ctx)


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
        uow = UnitOfWork(app.session_factory)
        data["uow"] = uow
        data["repos"] = UnitRepositories(uow, app.data, app.generator)
        with update_scope():
            try:
                result = await handler(event, data)
                await uow.commit()
                return result
            except BaseException:
                await uow.rollback()
                raise
            finally:
                await uow.close()


def _holds_anything(session: AsyncSession) -> bool:
    """Whether ``close()`` has something to release: a transaction (hence a connection) or
    objects to expunge. A session that only read (or was only asked for) has nothing to
    release; closing it anyway costs a greenlet switch for nothing (~30 µs)."""
    return session.in_transaction() or bool(session.identity_map) or bool(session.new)
