"""Sending pictures by Telegram file_id, uploading each file at most once.

The seeds' ImageAssetService, made Redis-first and race-free:

1. The file_id of (bot, asset) comes from the repository (Redis, then Postgres); it is only
   used when it was issued for the same file content (sha256 of the file on disk, computed once
   per file per process).
2. No file_id: upload the file from ``assets/``, keep the largest PhotoSize's file_id and
   file_unique_id, store them (Postgres, then Redis).
3. A file_id Telegram rejects (purged, another bot's, corrupted): count it, forget it, upload
   once more.
4. Concurrent first sends of one asset upload it once. "The file_id of this upload" is loaded
   through the cache engine like any other value: the engine's single-flight makes the first
   caller in the process the leader (its loader uploads with its own message), and the
   engine's Redis lock does the same across processes, waiters woken by pub/sub. Everybody
   else gets the leader's file_id and sends by it. Best effort, like the engine: a waiter that
   gives up after the lock wait, or a dead Redis, uploads itself (a duplicate upload is a
   cost, never an error).

Sends and edits share that logic: ``send_photo`` posts a new message, ``edit_photo`` replaces
the picture of an existing one (Today/Tomorrow buttons) through editMessageMedia.

A 429 (TelegramRetryAfter) is waited out once inside the call (``with_retry``: right for a
person waiting on an answer); ``send_photo(..., retry_429=False)`` raises it to the caller
instead, for a sender with a rate limiter of its own (the push pauses its whole token bucket);
``before_request`` lets that limiter take a token before every HTTP request the call sends.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import structlog
from aiogram import Bot
from aiogram.types import FSInputFile, InlineKeyboardMarkup, InputMediaPhoto, Message

from assets import IMAGES_DIR
from bot.ops.metrics import FILE_ID_FALLBACKS, IMAGE_SENDS
from bot.telegram.api import is_file_id_rejected, with_retry
from cache import CacheAside, Codec, Load
from db.repositories.context import DataContext
from db.repositories.images import ImageAssetRepository
from db.repositories.values import FileRef
from db.unit_of_work import unit_of_work

__all__ = ["ASSETS_DIR", "FileIdStore", "ImageSender", "RepositoryFileIds", "SentPhoto"]

log = structlog.get_logger(__name__)

ASSETS_DIR = IMAGES_DIR

PhotoMedia = str | FSInputFile
Deliver = Callable[[PhotoMedia], Awaitable[Message | bool]]

T = TypeVar("T")

#: The label children resolved once (``labels()`` takes a lock and builds a key per call).
_SENT_BY_FILE_ID = IMAGE_SENDS.labels("file_id")
_SENT_BY_UPLOAD = IMAGE_SENDS.labels("upload")


async def _call(call: Callable[[], Awaitable[T]], *, what: str, retry_429: bool) -> T:
    """``call()``, with one wait-and-retry on a 429 when ``retry_429`` (else the 429 raises)."""
    if retry_429:
        return await with_retry(call, what=what)
    return await call()


class FileIdStore(Protocol):
    """What the sender needs from ImageAssetRepository (Redis first, then Postgres)."""

    async def get(self, bot_id: int, asset_key: str, content_sha256: str) -> FileRef | None: ...

    async def save(self, bot_id: int, asset_key: str, ref: FileRef) -> None: ...

    async def forget(self, bot_id: int, asset_key: str) -> None: ...


class RepositoryFileIds:
    """FileIdStore on ImageAssetRepository: reads Redis-first, writes in their own transaction.

    Writes do not join the update's unit of work on purpose: a file_id is a fact about
    Telegram, true as soon as the upload returned, and must survive a handler that fails
    later (a rollback would cost another upload). They commit at once and then put the new
    file_id into Redis, so other processes see it immediately.
    """

    def __init__(self, ctx: DataContext) -> None:
        self.ctx = ctx
        self._reader = ImageAssetRepository(None, ctx)  # reads only: loaders open their own

    def key(self, bot_id: int, asset_key: str) -> str:
        return self._reader.key(bot_id, asset_key)

    def load_spec(self, bot_id: int, asset_key: str) -> Load[FileRef]:
        """The cache-aside Load of one file_id, to batch with other reads in one MGET."""
        return self._reader.load_spec(bot_id, asset_key)

    async def get(self, bot_id: int, asset_key: str, content_sha256: str) -> FileRef | None:
        return await self._reader.get_file_id(bot_id, asset_key, content_sha256)

    async def save(self, bot_id: int, asset_key: str, ref: FileRef) -> None:
        async with unit_of_work(self.ctx.session_factory) as session:
            repo = ImageAssetRepository(session, self.ctx)
            saved = await repo.save(
                bot_id, asset_key, ref.file_id, ref.file_unique_id, ref.content_sha256
            )
        await repo.cache_saved(bot_id, asset_key, saved)

    async def forget(self, bot_id: int, asset_key: str, file_id: str | None = None) -> None:
        """Drop the stored file_id (only while it is still ``file_id``, when given)."""
        async with unit_of_work(self.ctx.session_factory) as session:
            await ImageAssetRepository(session, self.ctx).forget(bot_id, asset_key, file_id)


@dataclass(frozen=True, slots=True)
class SentPhoto:
    """The result of a send or edit: the message (None for an edited inline message)."""

    message: Message | None
    method: str  # "file_id" or "upload"


class _Unset:
    """Marker type: "the caller did not read the file_id" (None means "read: there is none")."""

    __slots__ = ()


_UNSET: Final = _Unset()


#: How long the uploaded file_id is kept under the upload key: long enough for the waiters of
#: other processes, woken when it lands, to read it (the durable copy is the store's entry).
_UPLOAD_HANDOFF_TTL: Final = 15.0
_REF_CODEC: Final[Codec[FileRef]] = Codec(FileRef)
#: Uploads one caller tries before giving up when other callers' uploads keep failing.
_MAX_LEADS: Final = 3


class _Lead:
    """One caller's loader: whether the engine ran it (this caller led) and what it sent."""

    __slots__ = ("sent", "started")

    def __init__(self) -> None:
        self.started = False
        self.sent: SentPhoto | None = None


class ImageSender:
    """Send or edit photos from ``assets_dir`` by file_id, uploading when needed."""

    def __init__(
        self,
        store: FileIdStore,
        *,
        assets_dir: Path = ASSETS_DIR,
        cache: CacheAside | None = None,
        upload_key: Callable[[int, str, str], str] | None = None,
    ) -> None:
        """``cache``: the engine whose single-flight and lock make one upload per asset (a
        disabled engine when None: one upload per asset in this process only).
        ``upload_key(bot_id, asset_key, sha256)``: the engine key of one upload."""
        self.store = store
        self.assets_dir = assets_dir
        self._cache = cache if cache is not None else CacheAside(None)
        self._upload_key = upload_key or _default_upload_key
        self._hashes: dict[str, str] = {}
        self._listing: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ assets

    def path(self, asset_key: str) -> Path:
        path = (self.assets_dir / asset_key).resolve()
        if self.assets_dir.resolve() not in path.parents:
            raise ValueError(f"asset outside the assets directory: {asset_key!r}")
        return path

    def assets(self, folder: str) -> tuple[str, ...]:
        """Asset keys (``folder/name.jpg``) of the pictures in a folder, sorted, memoised."""
        found = self._listing.get(folder)
        if found is None:
            base = self.assets_dir / folder
            names = sorted(
                p.name
                for p in base.glob("*")
                if p.suffix.lower() in {".jpg", ".jpeg", ".png"} and p.is_file()
            )
            found = tuple(f"{folder}/{name}" for name in names)
            self._listing[folder] = found
        return found

    def random_asset(self, folder: str, rng: random.Random | None = None) -> str | None:
        keys = self.assets(folder)
        if not keys:
            return None
        return (rng or random).choice(keys)

    def sha256(self, asset_key: str) -> str:
        """Hash of the file on disk, computed on first use and memoised for the process."""
        digest = self._hashes.get(asset_key)
        if digest is None:
            h = hashlib.sha256()
            with self.path(asset_key).open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 16), b""):
                    h.update(chunk)
            digest = h.hexdigest()
            self._hashes[asset_key] = digest
        return digest

    def exists(self, asset_key: str) -> bool:
        try:
            return self.path(asset_key).is_file()
        except ValueError:
            return False

    # ------------------------------------------------------------------ public API

    async def send_photo(
        self,
        bot: Bot,
        chat_id: int,
        asset_key: str,
        *,
        caption: str | None = None,
        reply_markup: InlineKeyboardMarkup | None = None,
        parse_mode: str | None = None,
        known: FileRef | _Unset | None = _UNSET,
        retry_429: bool = True,
        before_request: Callable[[], Awaitable[None]] | None = None,
        allow_paid_broadcast: bool = False,
    ) -> SentPhoto:
        """Send ``asset_key`` to a chat. ``known``: the file_id ref already read by the caller
        (batched with other reads), so the sender does not read it again. ``parse_mode``: None
        keeps the Bot's default. ``retry_429=False``: a TelegramRetryAfter is raised to the
        caller at once instead of being waited out (and retried) inside this call.
        ``before_request``: awaited before *each* sendPhoto request, so a rate limiter sees
        every one (one call may send two: a rejected file_id, then the upload).
        ``allow_paid_broadcast``: the daily push's paid mode (Bot API 7.11)."""
        extra: dict[str, Any] = {} if parse_mode is None else {"parse_mode": parse_mode}
        if allow_paid_broadcast:
            extra["allow_paid_broadcast"] = True
        prepaid = False

        async def deliver(media: PhotoMedia) -> Message:
            nonlocal prepaid
            if before_request is not None:
                if prepaid:
                    prepaid = False
                else:
                    await before_request()
            return await bot.send_photo(
                chat_id=chat_id, photo=media, caption=caption, reply_markup=reply_markup, **extra
            )

        async def prepay() -> None:
            # An upload leader takes its token *before* it holds the upload slot (and the
            # cross-process lock): waiting on the push's bucket there would make every person
            # who needs the same picture wait too.
            nonlocal prepaid
            if before_request is not None and not prepaid:
                await before_request()
                prepaid = True

        return await self._deliver(bot, asset_key, deliver, known, retry_429, prepay)

    async def edit_photo(
        self,
        bot: Bot,
        asset_key: str,
        *,
        chat_id: int | None = None,
        message_id: int | None = None,
        inline_message_id: str | None = None,
        caption: str | None = None,
        reply_markup: InlineKeyboardMarkup | None = None,
        known: FileRef | _Unset | None = _UNSET,
    ) -> SentPhoto:
        """Replace the picture (and caption) of a message through editMessageMedia."""

        async def deliver(media: PhotoMedia) -> Message | bool:
            return await bot.edit_message_media(
                media=InputMediaPhoto(media=media, caption=caption),
                chat_id=chat_id,
                message_id=message_id,
                inline_message_id=inline_message_id,
                reply_markup=reply_markup,
            )

        return await self._deliver(bot, asset_key, deliver, known, True)

    # ------------------------------------------------------------------ the algorithm

    async def _deliver(
        self,
        bot: Bot,
        asset_key: str,
        deliver: Deliver,
        known: FileRef | _Unset | None,
        retry_429: bool,
        prepay: Callable[[], Awaitable[None]] | None = None,
    ) -> SentPhoto:
        bot_id = bot.id
        sha = self.sha256(asset_key)
        if isinstance(known, _Unset):
            ref = await self.store.get(bot_id, asset_key, sha)
        else:
            ref = known if known is not None and known.content_sha256 == sha else None
        if ref is not None:
            sent = await self._by_file_id(bot_id, asset_key, ref, deliver, retry_429)
            if sent is not None:
                return sent
        return await self._upload_once(bot_id, asset_key, sha, deliver, retry_429, prepay)

    async def _by_file_id(
        self, bot_id: int, asset_key: str, ref: FileRef, deliver: Deliver, retry_429: bool
    ) -> SentPhoto | None:
        """Send by file_id; None (after forgetting it) when Telegram rejects the file_id."""
        try:
            result = await _call(
                lambda: deliver(ref.file_id), what="photo_by_file_id", retry_429=retry_429
            )
        except Exception as exc:
            if not is_file_id_rejected(exc):
                raise
            FILE_ID_FALLBACKS.inc()
            log.warning("file_id_rejected", asset=asset_key, error=str(exc))
            await self.store.forget(bot_id, asset_key)
            # and the upload's hand-off copy, so the next upload does not hand it out again
            await self._cache.invalidate(self._upload_key(bot_id, asset_key, ref.content_sha256))
            return None
        _SENT_BY_FILE_ID.inc()
        return SentPhoto(result if isinstance(result, Message) else None, "file_id")

    async def _upload_once(
        self,
        bot_id: int,
        asset_key: str,
        sha: str,
        deliver: Deliver,
        retry_429: bool,
        prepay: Callable[[], Awaitable[None]] | None = None,
    ) -> SentPhoto:
        """Upload unless someone else is uploading the same file; then send by their file_id.

        The engine runs one caller's loader per key (in this process, and across processes
        while Redis answers); that caller is the leader and keeps its own message. The others
        get the leader's file_id. When the leader fails (a 429 of its own, a network error),
        the others do not inherit its error: they lead in turn, a bounded number of times.
        """
        if prepay is not None:
            # An upload leader takes its rate-limit token *before* it can become the leader:
            # waiting on the push's bucket inside the upload would make every person who
            # needs the same picture wait too. A follower spends the token on its own send.
            await prepay()
        key = self._upload_key(bot_id, asset_key, sha)
        for attempt in range(_MAX_LEADS):
            lead = _Lead()

            async def upload(lead: _Lead = lead, attempt: int = attempt) -> FileRef | None:
                lead.started = True
                if attempt == 0:
                    # Someone may have finished an upload just before we asked.
                    found = await self.store.get(bot_id, asset_key, sha)
                    if found is not None:
                        return found
                lead.sent, ref = await self._upload(bot_id, asset_key, sha, deliver, retry_429)
                return ref

            try:
                ref = await self._cache.get_or_load(
                    key, upload, ttl=_UPLOAD_HANDOFF_TTL, codec=_REF_CODEC
                )
            except Exception:
                if lead.started:  # our own upload failed: the caller decides
                    raise
                log.info("upload_leader_failed", asset=asset_key, attempt=attempt)
                continue
            if lead.sent is not None:
                return lead.sent
            if ref is not None:
                sent = await self._by_file_id(bot_id, asset_key, ref, deliver, retry_429)
                if sent is not None:
                    return sent
        # Still nothing of our own: upload outside the engine (a duplicate at worst).
        sent, _ = await self._upload(bot_id, asset_key, sha, deliver, retry_429)
        return sent

    async def _upload(
        self, bot_id: int, asset_key: str, sha: str, deliver: Deliver, retry_429: bool
    ) -> tuple[SentPhoto, FileRef | None]:
        path = self.path(asset_key)
        result = await _call(
            lambda: deliver(FSInputFile(path, filename=path.name)),
            what="photo_upload",
            retry_429=retry_429,
        )
        _SENT_BY_UPLOAD.inc()
        message = result if isinstance(result, Message) else None
        ref = _largest(message.photo if message is not None else None, sha)
        if ref is not None:
            try:
                await self.store.save(bot_id, asset_key, ref)
            except Exception:
                # The user got the picture; failing to remember it costs one more upload later.
                log.exception("file_id_store_failed", asset=asset_key)
        else:
            log.info("upload_without_photo_sizes", asset=asset_key)
        log.info("photo_uploaded", asset=asset_key)
        return SentPhoto(message, "upload"), ref


def _default_upload_key(bot_id: int, asset_key: str, sha: str) -> str:
    return f"upload:{bot_id}:{asset_key}:{sha}"


def _largest(sizes: Sequence[Any] | None, sha: str) -> FileRef | None:
    if not sizes:
        return None
    top = max(sizes, key=lambda s: (s.width * s.height, s.file_size or 0))
    return FileRef(file_id=top.file_id, file_unique_id=top.file_unique_id, content_sha256=sha)
