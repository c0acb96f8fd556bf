"""An HTTP load balancer (nginx, else HAProxy) on loopback, round-robin over upstream ports.

What a multi-instance test needs from it: a URL to send to, requests spread evenly over the
upstreams (plain round-robin, one worker, so the order is deterministic), and a dead upstream
taken out of rotation by passive checks (nginx ``max_fails``, HAProxy ``check``) so that a
killed instance is not sent traffic for long.

``retry_non_idempotent``: when an upstream fails *before* answering, nginx/HAProxy may resend the
request to the next one. For GET that is always allowed; for POST (a webhook update) only with
this flag. Off by default, because a POST whose upstream died mid-way may have been processed:
whether to resend is exactly what an at-most-once test wants to decide, not the balancer.

Each balancer writes an access log (``access_log``) naming the upstream that served each
request, for tests that want to see the spread from outside.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.servers import binaries
from tests.servers.process import (
    HOST,
    ServerProcess,
    free_ports,
    log_tail,
    port_open,
    start_with_port_retry,
)

KINDS = ("nginx", "haproxy")


@dataclass
class LoadBalancer:
    kind: str  # "nginx" | "haproxy"
    port: int
    upstream_ports: list[int]
    workdir: Path
    process: ServerProcess

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def access_log(self) -> Path:
        """One line per request ending in ``upstream=<host:port>`` (HAProxy logs to stdout,
        which is its process log)."""
        return self.workdir / ("access.log" if self.kind == "nginx" else "haproxy.log")

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.process.log_file, lines)

    def stop(self) -> None:
        self.process.stop()


def _nginx_conf(
    workdir: Path, port: int, upstreams: Sequence[int], *, retry_non_idempotent: bool
) -> str:
    servers = "\n".join(
        f"        server {HOST}:{p} max_fails=1 fail_timeout=5s;" for p in upstreams
    )
    next_upstream = "error timeout" + (" non_idempotent" if retry_non_idempotent else "")
    temp = {name: workdir / "tmp" / name for name in ("body", "proxy", "fcgi", "uwsgi", "scgi")}
    return f"""
daemon off;
master_process on;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    log_format upstream '$request_method $uri $status upstream=$upstream_addr';
    access_log {workdir / "access.log"} upstream;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    upstream app {{
{servers}
        keepalive 16;
    }}
    server {{
        listen {HOST}:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
            proxy_next_upstream {next_upstream};
            proxy_next_upstream_tries 2;
        }}
    }}
}}
"""


def _haproxy_conf(
    workdir: Path, port: int, upstreams: Sequence[int], *, retry_non_idempotent: bool
) -> str:
    servers = "\n".join(
        f"    server s{i} {HOST}:{p} check inter 500ms fall 1 rise 1"
        for i, p in enumerate(upstreams)
    )
    retry_on = "    retry-on all-retryable-errors\n" if retry_non_idempotent else ""
    return f"""
global
    maxconn 1024
    log stdout format raw local0
defaults
    mode http
    log global
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 1
    option redispatch
{retry_on}
frontend fe
    bind {HOST}:{port}
    log-format "%HM %HU %ST upstream=%si:%sp"
    default_backend app
backend app
    balance roundrobin
{servers}
"""


def start_load_balancer(
    upstream_ports: Sequence[int],
    workdir: Path,
    *,
    kind: str = "auto",
    retry_non_idempotent: bool = False,
) -> LoadBalancer:
    """Start ``kind`` (nginx | haproxy | auto = nginx if installed, else haproxy) on a free port.

    Raises BinaryMissing when the asked-for balancer (or, for auto, both) is not installed.
    """
    if not upstream_ports:
        raise ValueError("a load balancer needs at least one upstream")
    if kind == "auto":
        kind = "nginx" if binaries.nginx() else "haproxy"
    if kind not in KINDS:
        raise ValueError(f"unknown load balancer {kind!r} (expected one of {KINDS})")
    binary = binaries.require(kind)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    conf = workdir / f"{kind}.conf"

    def attempt() -> LoadBalancer:
        (port,) = free_ports(1)
        if kind == "nginx":
            conf.write_text(
                _nginx_conf(
                    workdir, port, upstream_ports, retry_non_idempotent=retry_non_idempotent
                )
            )
            # -e: the startup error log too, not /var/log/nginx (unwritable for non-root).
            argv = [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
            log_file = workdir / "error.log"
            stop_signal = signal.SIGQUIT  # graceful: finish in-flight requests
        else:
            conf.write_text(
                _haproxy_conf(
                    workdir, port, upstream_ports, retry_non_idempotent=retry_non_idempotent
                )
            )
            argv = [binary, "-db", "-f", str(conf)]
            log_file = workdir / "haproxy.log"
            stop_signal = signal.SIGUSR1  # soft stop: finish in-flight requests
        process = ServerProcess(
            argv, name=kind, log_file=log_file, cwd=workdir, stop_signal=stop_signal
        )
        process.spawn()
        process.wait_ready(lambda: port_open(port))
        return LoadBalancer(kind, port, list(upstream_ports), workdir, process)

    return start_with_port_retry(attempt)
