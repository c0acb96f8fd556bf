"""What the bot knows and does, apart from Telegram's update plumbing: signs and dates,
horoscope generation, and the services handlers and jobs call."""
