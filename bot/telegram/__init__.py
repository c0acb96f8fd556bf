"""The Telegram face: routers and handlers, middlewares, keyboards, callback data, texts, and
the policy for Telegram's answers (api.py). Handlers call services; they hold no Redis or SQL."""
