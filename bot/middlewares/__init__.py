"""Outer middlewares on every update, outermost first: context (log + metrics), unit of work,
current user (with the throttle in the same Redis round trip)."""

from bot.middlewares.context import ContextMiddleware
from bot.middlewares.uow import UnitOfWorkMiddleware
from bot.middlewares.user import UserMiddleware

__all__ = ["ContextMiddleware", "UnitOfWorkMiddleware", "UserMiddleware"]
