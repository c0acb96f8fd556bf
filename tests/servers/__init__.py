"""Real servers for tests that need more than one Postgres and one Redis.

Modules (plain Python, usable outside pytest too):

- ``process``: ServerProcess (own process group, parent-death signal, atexit clean-up), free
  ports, ``wait_until`` (wait for an observed state, bounded), ``with_address`` (a URL through
  a proxy).
- ``binaries``: where valkey-server/valkey-cli, nginx, haproxy and pgbouncer come from;
  BinaryMissing says how to install a missing one.
- ``redis_servers``: RedisNode, a Redis Cluster (ClusterTopology), primary + replica +
  sentinels (SentinelTopology) with kill-and-wait-for-failover helpers.
- ``pgbouncer``: PgBouncer (transaction pooling) in front of a Postgres server.
- ``loadbalancer``: nginx or HAProxy, round-robin over upstream ports.
- ``fault_proxy``: a TCP proxy that can pass, refuse, hang and cut, switched at run time.
- ``fake_llm``: an OpenAI-compatible chat-completions server with switchable behaviour.
- ``background``: the event-loop thread the last two run on.

``fixtures`` turns them into pytest fixtures (loaded for the whole suite by tests/conftest.py);
its docstring lists every fixture and what it yields. Smoke tests: tests/integration/servers/.
"""
