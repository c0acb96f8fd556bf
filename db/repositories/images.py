"""Telegram file_ids of the bot's pictures: Redis, then Postgres, then None (upload).

A file_id belongs to one bot (another bot's file_id fails) and to one version of the file:
the row keeps the sha256 of what was uploaded, and a row whose hash differs from the current
file counts as absent, so a changed picture is uploaded once more instead of showing the old.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from cache import Codec, Load
from db.models import ImageAsset
from db.repositories.context import DataContext
from db.repositories.values import FileRef

__all__ = ["FILE_ID_NEGATIVE_TTL", "FILE_ID_TTL", "ImageAssetRepository", "SessionRequiredError"]

#: A week: file_ids do not expire on Telegram's side, and every change is written through.
FILE_ID_TTL: Final = 7 * 86_400.0
#: "Never uploaded" is remembered briefly; ``cache_saved`` overwrites it right after an upload.
FILE_ID_NEGATIVE_TTL: Final = 60.0

_CODEC: Final[Codec[FileRef]] = Codec(FileRef)

#: The columns that make a FileRef (see _file_ref).
_FILE_REF_COLUMNS: Final = (
    ImageAsset.file_id,
    ImageAsset.file_unique_id,
    ImageAsset.content_sha256,
)


def _file_ref(row: Any) -> FileRef:
    return FileRef(
        file_id=row.file_id,
        file_unique_id=row.file_unique_id,
        content_sha256=row.content_sha256,
    )


class SessionRequiredError(RuntimeError):
    """A write was called on a repository built without a session (a read-only one)."""


class ImageAssetRepository:
    """file_ids per (bot_id, asset_key). Writes go to the unit-of-work session, never commit.

    Reads (``key``, ``load_spec``, ``get_file_id``, ``file_ids``, ``warm``) never use the
    session (loaders open their own short ones), so ``session`` may be None for a read-only
    repository; the writes (``save``, ``cache_saved``, ``forget``) then raise
    SessionRequiredError.
    """

    __slots__ = ("_ctx", "_session")

    def __init__(self, session: AsyncSession | None, ctx: DataContext) -> None:
        self._session = session
        self._ctx = ctx

    def _writer(self, method: str) -> AsyncSession:
        if self._session is None:
            raise SessionRequiredError(
                f"ImageAssetRepository.{method} writes: build the repository with the unit of "
                "work's AsyncSession (this one has session=None and can only read)"
            )
        return self._session

    def key(self, bot_id: int, asset_key: str) -> str:
        return self._ctx.keys.key("fileid", bot_id, asset_key)

    def _loader(self, bot_id: int, asset_key: str) -> Callable[[], Awaitable[FileRef | None]]:
        async def load() -> FileRef | None:
            async with self._ctx.session_factory() as s:
                row = (
                    await s.execute(
                        select(*_FILE_REF_COLUMNS).where(
                            ImageAsset.bot_id == bot_id, ImageAsset.asset_key == asset_key
                        )
                    )
                ).first()
            return None if row is None else _file_ref(row)

        return load

    def load_spec(self, bot_id: int, asset_key: str) -> Load[FileRef]:
        """The cache-aside Load of one file_id, to batch with other reads in ONE
        ``load_many`` round trip. Compare ``content_sha256`` yourself, as ``get_file_id`` does.
        """
        return Load(
            self.key(bot_id, asset_key),
            self._loader(bot_id, asset_key),
            _CODEC,
            FILE_ID_TTL,
            negative_ttl=FILE_ID_NEGATIVE_TTL,
        )

    async def get_file_id(self, bot_id: int, asset_key: str, content_sha256: str) -> FileRef | None:
        """The file_id to send, or None (upload it, then ``save``).

        The entry caches the row as stored, hash included; the comparison with the current
        file's hash happens here, so a stale file_id is treated as absent without a query.
        """
        ref: FileRef | None = await self._ctx.cache.get_or_load(
            self.key(bot_id, asset_key),
            self._loader(bot_id, asset_key),
            ttl=FILE_ID_TTL,
            codec=_CODEC,
            negative_ttl=FILE_ID_NEGATIVE_TTL,
        )
        if ref is None or ref.content_sha256 != content_sha256:
            return None
        return ref

    async def file_ids(
        self,
        bot_id: int,
        asset_keys: Sequence[str],
        *,
        content_sha256: Mapping[str, str] | None = None,
    ) -> dict[str, FileRef]:
        """Cached file_ids of several assets with one MGET (inline mode); misses are absent.

        No Postgres fallback on purpose: inline answers must be fast, and ``warm`` fills
        Redis with every file_id at start-up. With ``content_sha256`` stale ones are dropped.
        """
        keys = list(asset_keys)
        refs = await self._ctx.cache.get_many([self.key(bot_id, k) for k in keys], _CODEC)
        out: dict[str, FileRef] = {}
        for asset_key, ref in zip(keys, refs, strict=True):
            if ref is None:
                continue
            if content_sha256 is not None:
                expected = content_sha256.get(asset_key)
                if expected is not None and expected != ref.content_sha256:
                    continue
            out[asset_key] = ref
        return out

    async def save(
        self,
        bot_id: int,
        asset_key: str,
        file_id: str,
        file_unique_id: str | None,
        content_sha256: str,
    ) -> FileRef:
        """Upsert the file_id in the unit of work; the old cache entry goes after commit.

        Call ``await repo.cache_saved(bot_id, asset_key, ref)`` after the commit to put the
        new file_id into Redis right away (otherwise the next read loads it from Postgres).
        """
        session = self._writer("save")
        values = {
            "file_id": file_id,
            "file_unique_id": file_unique_id,
            "content_sha256": content_sha256,
        }
        stmt = insert(ImageAsset).values(bot_id=bot_id, asset_key=asset_key, **values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[ImageAsset.bot_id, ImageAsset.asset_key],
            set_={**values, "updated_at": func.now()},
        )
        await session.execute(stmt)
        self._ctx.cache.invalidate_after_commit(session, self.key(bot_id, asset_key))
        return FileRef(
            file_id=file_id, file_unique_id=file_unique_id, content_sha256=content_sha256
        )

    async def cache_saved(self, bot_id: int, asset_key: str, ref: FileRef) -> None:
        """After the unit of work of ``save`` committed (db/unit_of_work.py, which also ran the
        after-commit invalidations, so no safety-net task can delete the entry after we set
        it): delete the key and its load lock (so a load that read Postgres before the commit
        cannot write the old value back), then SET the new file_id.
        """
        self._writer("cache_saved")
        key = self.key(bot_id, asset_key)
        await self._ctx.cache.invalidate(key)
        await self._ctx.cache.set(key, ref, ttl=FILE_ID_TTL, codec=_CODEC)

    async def forget(self, bot_id: int, asset_key: str, file_id: str | None = None) -> None:
        """Drop a file_id Telegram rejected; the cache entry goes after the commit.

        ``file_id``: only while the stored one is still that (a fresh upload by another
        process since the rejected send must not be forgotten with it).
        """
        session = self._writer("forget")
        stmt = delete(ImageAsset).where(
            ImageAsset.bot_id == bot_id, ImageAsset.asset_key == asset_key
        )
        if file_id is not None:
            stmt = stmt.where(ImageAsset.file_id == file_id)
        await session.execute(stmt)
        self._ctx.cache.invalidate_after_commit(session, self.key(bot_id, asset_key))

    async def warm(self, bot_id: int) -> int:
        """Load all of a bot's file_ids into Redis: one query, one pipeline; returns the count."""
        async with self._ctx.session_factory() as s:
            rows = (
                await s.execute(
                    select(ImageAsset.asset_key, *_FILE_REF_COLUMNS).where(
                        ImageAsset.bot_id == bot_id
                    )
                )
            ).all()
        items = [(self.key(bot_id, row.asset_key), _file_ref(row)) for row in rows]
        await self._ctx.cache.set_many(items, ttl=FILE_ID_TTL, codec=_CODEC)
        return len(items)
