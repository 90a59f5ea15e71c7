"""Serve a simulated tenant on loopback, two ways at once.

* As an HTTPS proxy (``endpoints.proxy`` plus ``ca_bundle``): clients send ``CONNECT graph.microsoft.com:443``,
  the proxy answers TLS itself with a certificate for the real host name from a throwaway CA (trustme),
  and the service that host stands for answers. So the kit's live code path (msal, requests, urllib3,
  vcrpy in record mode) runs unchanged and recordings carry the real host names.
* Directly: one HTTPS listener per service on its own port, as a private endpoint or a test double is
  reached (:meth:`Sandbox.direct_endpoints`): other hosts, the same resources.

Nothing here listens beyond 127.0.0.1.
"""

from __future__ import annotations

import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import BaseServer
from typing import Any

import trustme

from ..wire.smtp_server import LOOPBACK, LoopbackSMTP
from . import cloud
from .exchange import ExchangeAdmin
from .graph import Graph
from .identity import Identity
from .smtp import SandboxSMTP
from .tenant import SimulatedTenant

POLL = 0.05  # seconds a listener takes to notice it is shut down


class _TenantHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 over TLS: one simulated-tenant exchange per request."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: without this each answer waits ~40 ms
    tenant: SimulatedTenant
    lock: threading.Lock
    service: str
    host: str  # the CONNECT host through the proxy; empty when served directly (the Host header says)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        host = self.host or headers.get("host", "")
        with self.lock:
            delay = self.tenant.delay_for(self.command, self.path)
        time.sleep(delay)  # outside the lock: other requests go on meanwhile
        with self.lock:
            response = self.tenant.handle(self.service, self.command, host, self.path, headers, body)
        if response.reset:
            self._reset()
            return
        payload = response.encode()
        self.send_response(response.status)
        for name, value in (response.headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _reset(self) -> None:
        """Drop the connection unanswered, with a TCP reset when it closes."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _answer


def _handler(tenant: SimulatedTenant, lock: threading.Lock, service: str, host: str = "") -> type[_TenantHandler]:
    return type("Handler", (_TenantHandler,), {"tenant": tenant, "lock": lock, "service": service, "host": host})


def _over_tls(
    tls: ssl.SSLContext, sock: socket.socket, client: Any, server: BaseServer, handler: type[_TenantHandler]
) -> None:
    """Answer one client's requests over TLS; the handshake happens in the client's own thread."""
    try:
        secure = tls.wrap_socket(sock, server_side=True)
    except (ssl.SSLError, OSError):
        return
    try:
        handler(secure, client, server)
    except (ssl.SSLError, ConnectionError):
        pass
    finally:
        secure.close()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_CONNECT(self) -> None:
        host = self.path.rsplit(":", 1)[0]
        self.send_response(200, "Connection Established")
        self.end_headers()
        server: _ProxyServer = self.server  # type: ignore[assignment]
        _over_tls(
            server.tls,
            self.connection,
            self.client_address,
            server,
            _handler(server.tenant, server.lock, cloud.SERVICES.get(host, ""), host),
        )
        self.close_connection = True

    def do_GET(self) -> None:
        self.send_error(400, "this proxy only tunnels HTTPS (CONNECT)")


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tenant: SimulatedTenant, tls: ssl.SSLContext, lock: threading.Lock) -> None:
        super().__init__((LOOPBACK, 0), _ProxyHandler)
        self.tenant = tenant
        self.tls = tls
        self.lock = lock


class _DirectServer(ThreadingHTTPServer):
    """One service on its own loopback port."""

    daemon_threads = True

    def __init__(self, handler: type[_TenantHandler], tls: ssl.SSLContext) -> None:
        super().__init__((LOOPBACK, 0), handler)
        self.tls = tls

    def finish_request(self, request: Any, client_address: Any) -> None:
        _over_tls(self.tls, request, client_address, self, self.RequestHandlerClass)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Sandbox:
    """A running simulated tenant: point ``endpoints`` here through the proxy, or ``direct_endpoints`` at
    its services' own ports."""

    tenant: SimulatedTenant
    proxy: str
    ca_bundle: str
    smtp_port: int
    ports: dict[str, int]  # service -> its direct port

    def endpoints(self) -> dict[str, Any]:
        return {"proxy": self.proxy, "ca_bundle": self.ca_bundle, "smtp_host": LOOPBACK, "smtp_port": self.smtp_port}

    def direct_endpoints(self) -> dict[str, Any]:
        """Parameter-file endpoint overrides that reach each service on its own port, without the proxy."""
        return {
            "authority_host": f"{LOOPBACK}:{self.ports['login']}",
            "graph_url": f"https://{LOOPBACK}:{self.ports['graph']}",
            "exchange_url": f"https://{LOOPBACK}:{self.ports['exchange']}",
            "smtp_host": LOOPBACK,
            "smtp_port": self.smtp_port,
            "ca_bundle": self.ca_bundle,
        }


@contextmanager
def serve(tenant: SimulatedTenant) -> Iterator[Sandbox]:
    """Run ``tenant`` behind a loopback HTTPS proxy and on a port per service, for the duration of the block; its
    services (sign-in, Graph, Exchange's admin API) are made the first time it is served."""
    tenant.services = tenant.services or {
        "login": Identity(tenant),
        "graph": Graph(tenant),
        "exchange": ExchangeAdmin(tenant),
    }
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*cloud.SERVICES, LOOPBACK, "localhost").configure_cert(tls)
    lock = threading.Lock()
    proxy = _ProxyServer(tenant, tls, lock)
    direct = {
        service: _DirectServer(_handler(tenant, lock, service), tls)
        for service in dict.fromkeys(cloud.SERVICES.values())
    }
    servers: list[ThreadingHTTPServer] = [proxy, *direct.values()]
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(POLL,), name="sandbox", daemon=True).start()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="runbook-sandbox-") as tmp,
            LoopbackSMTP(SandboxSMTP(tenant), ca) as smtp,
        ):
            bundle = Path(tmp) / "sandbox-ca.pem"
            ca.cert_pem.write_to_path(str(bundle))
            yield Sandbox(
                tenant,
                f"http://{LOOPBACK}:{proxy.server_address[1]}",
                str(bundle),
                smtp.port,
                {service: server.server_address[1] for service, server in direct.items()},
            )
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
