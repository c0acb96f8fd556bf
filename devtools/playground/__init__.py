"""The local playground: the real bot, a local Bot API instead of Telegram, and a web chat.

`make run` without BOT_TOKEN lands here, so that someone who has just cloned the project sees
the real bot (real handlers, real Redis and Postgres, long polling) answer within a minute,
and watches the data layer work: pictures re-sent by file_id, horoscopes read from Redis.
"""

from devtools.playground.main import PLAYGROUND_TOKEN, banner, run_playground
from devtools.playground.web import PLAYGROUND_USERS, Playground, SimUser, attach

__all__ = [
    "PLAYGROUND_TOKEN",
    "PLAYGROUND_USERS",
    "Playground",
    "SimUser",
    "attach",
    "banner",
    "run_playground",
]
