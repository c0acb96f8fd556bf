"""Services the handlers call: images, horoscopes, stats, throttling, Telegram call policy.

Handlers never talk to Redis or SQL themselves; they call these (and the repositories).
"""
