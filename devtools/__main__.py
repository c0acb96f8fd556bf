"""`make run`: the real bot when a token is configured, the local playground otherwise.

Only a development convenience: `python -m bot run` itself never falls back to the playground
(an empty or missing token there is an error), so a production process whose secret file came
out empty cannot end up serving simulated users from the production database.
"""

from __future__ import annotations

import sys

from bot.cli import main
from bot.config import SECRETS_DIR, ConfigError, load_settings


def token_configured() -> bool:
    """Whether any token source is set (BOT_TOKEN, BOT_TOKEN_FILE, or the Docker secret)."""
    try:
        settings = load_settings()
    except ConfigError:
        return True  # let `run` print the configuration error
    return (
        settings.bot_token is not None
        or settings.bot_token_file is not None
        or (SECRETS_DIR / "telegram_bot_token").is_file()
    )


if __name__ == "__main__":
    sys.exit(main(["run" if token_configured() else "playground", *sys.argv[1:]]))
