"""A local Telegram Bot API double: e2e tests of the real aiogram client, and the playground.

Telegram is not reachable from CI or a developer laptop, yet the bot's behaviour against it
(file_id re-use, 429/403 handling, message edits, HTML escaping) is what matters most. This
package answers aiogram over real HTTP with Telegram's response shapes and error texts, and
lets tests and a web UI act as users and inject faults in-process.
"""

from devtools.botapi.html import EntityParseError, escape, parse_html
from devtools.botapi.models import (
    APIError,
    FakeBot,
    FakeUser,
    RecordedCall,
    StoredFile,
    StoredMessage,
    Upload,
)
from devtools.botapi.server import BotAPIServer
from devtools.botapi.state import BotAPIState

__all__ = [
    "APIError",
    "BotAPIServer",
    "BotAPIState",
    "EntityParseError",
    "FakeBot",
    "FakeUser",
    "RecordedCall",
    "StoredFile",
    "StoredMessage",
    "Upload",
    "escape",
    "parse_html",
]
