"""Development tooling, not installed into the image: embedded Postgres and Valkey, the local
Bot API double, the playground, and Redis traffic counting for tests and benchmarks."""
