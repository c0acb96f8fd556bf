"""Outer middlewares on every update, outermost first: context (log + metrics), unit of work,
current user (with the throttle in the same Redis round trip)."""

from bot.telegram.middlewares.context import ContextMiddleware
from bot.telegram.middlewares.uow import UnitOfWorkMiddleware
from bot.telegram.middlewares.user import UserMiddleware

__all__ = ["ContextMiddleware", "UnitOfWorkMiddleware", "UserMiddleware"]
