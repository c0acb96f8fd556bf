"""Engine and session factory (SQLAlchemy 2 async on asyncpg), pool settings of seed 003."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_recycle: int = 3600,
    pool_timeout: float = 10.0,
    echo: bool = False,
    application_name: str = "horoscope-bot",
) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=pool_recycle,
        pool_timeout=pool_timeout,
        echo=echo,
        connect_args={"server_settings": {"application_name": application_name}},
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects read in a unit of work stay usable after its commit
    # (the middleware commits before the handler's return value is used).
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
