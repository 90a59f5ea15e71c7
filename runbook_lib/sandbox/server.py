"""Serve a simulated tenant on loopback as an HTTPS proxy.

Clients reach it the way they reach a corporate proxy (``endpoints.proxy`` plus ``ca_bundle``):
they send ``CONNECT graph.microsoft.com:443``, the proxy answers TLS itself with a certificate for
the real hostname from a throwaway CA (trustme), and the simulated tenant answers the request.
So the kit's live code path (msal, requests, urllib3, vcrpy in record mode) runs unchanged and
recordings carry the real hostnames. Nothing here listens beyond 127.0.0.1.
"""
from __future__ import annotations

import ssl
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import trustme

from ..smtp_server import LOOPBACK, LoopbackSMTP
from .smtp import SandboxSMTP
from .tenant import GRAPH_HOST, LOGIN_HOST, SimulatedTenant

HOSTS = [LOGIN_HOST, GRAPH_HOST, "outlook.office365.com"]


class _TenantHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 inside the tunnel: one simulated-tenant exchange per request."""

    protocol_version = "HTTP/1.1"
    tenant: SimulatedTenant
    host: str
    lock: threading.Lock

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.lock:
            delay = self.tenant.delay_for(self.command, self.path)
        time.sleep(delay)   # outside the lock: other requests go on meanwhile
        with self.lock:
            response = self.tenant.handle(self.command, self.host, self.path, headers, body)
        payload = response.encode()
        self.send_response(response.status)
        for name, value in (response.headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _answer


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_CONNECT(self) -> None:
        host = self.path.rsplit(":", 1)[0]
        self.send_response(200, "Connection Established")
        self.end_headers()
        server: _ProxyServer = self.server  # type: ignore[assignment]
        try:
            tls = server.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            self.close_connection = True
            return
        handler = type("Handler", (_TenantHandler,), {"tenant": server.tenant, "host": host, "lock": server.lock})
        try:
            handler(tls, self.client_address, server)
        except (ssl.SSLError, ConnectionError):
            pass
        self.close_connection = True

    def do_GET(self) -> None:
        self.send_error(400, "this proxy only tunnels HTTPS (CONNECT)")


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tenant: SimulatedTenant, tls: ssl.SSLContext) -> None:
        super().__init__((LOOPBACK, 0), _ProxyHandler)
        self.tenant = tenant
        self.tls = tls
        self.lock = threading.Lock()


@dataclass(frozen=True)
class Sandbox:
    """A running simulated tenant: point ``endpoints`` (proxy, CA bundle, SMTP host and port) here."""

    tenant: SimulatedTenant
    proxy: str
    ca_bundle: str
    smtp_port: int

    def endpoints(self) -> dict[str, Any]:
        return {"proxy": self.proxy, "ca_bundle": self.ca_bundle, "smtp_host": LOOPBACK, "smtp_port": self.smtp_port}


@contextmanager
def serve(tenant: SimulatedTenant) -> Iterator[Sandbox]:
    """Run ``tenant`` behind a loopback HTTPS proxy for the duration of the block."""
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*HOSTS).configure_cert(tls)
    server = _ProxyServer(tenant, tls)
    thread = threading.Thread(target=server.serve_forever, name="sandbox-proxy", daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory(prefix="runbook-sandbox-") as tmp, LoopbackSMTP(SandboxSMTP(tenant), ca) as smtp:
        bundle = Path(tmp) / "sandbox-ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        try:
            yield Sandbox(tenant, f"http://{LOOPBACK}:{server.server_address[1]}", str(bundle), smtp.port)
        finally:
            server.shutdown()
            server.server_close()
