"""A real SMTP server on loopback with STARTTLS (aiosmtpd), for replay and for the simulated tenant.

The kit's SMTP client code talks to it exactly as it talks to smtp.office365.com: plain connect, EHLO,
STARTTLS with certificate verification (a throwaway CA from trustme), EHLO again, AUTH XOAUTH2.
What the server answers is the handler's business (:class:`ReplayHandler` here; the simulated tenant
has its own).
"""

from __future__ import annotations

import collections
import socket
import ssl
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

LOOPBACK = "127.0.0.1"
COMMAND_LIMIT = 16384


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


class _SMTP(SMTP):
    """aiosmtpd's SMTP with room for AUTH XOAUTH2, whose line carries a whole token (Exchange accepts it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command_size_limit = COMMAND_LIMIT
        self.command_size_limits = collections.defaultdict(lambda: COMMAND_LIMIT)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _SMTP(self.handler, **self.SMTP_kwargs)


class LoopbackSMTP:
    """Start ``handler`` on 127.0.0.1 with STARTTLS; ``ca`` signs its certificate (a new CA when not given)."""

    def __init__(self, handler: Any, ca: trustme.CA | None = None) -> None:
        self.ca = ca or trustme.CA()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(LOOPBACK).configure_cert(tls)
        self.port = free_port()
        self.controller = _Controller(
            handler,
            hostname=LOOPBACK,
            port=self.port,
            tls_context=tls,
            require_starttls=False,
            auth_require_tls=True,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
        )

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def __enter__(self) -> LoopbackSMTP:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def ehlo_lines(host: str, features: list[str]) -> list[str]:
    lines = [host, *features]
    return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]


class ReplayHandler:
    """Answers as a recorded SMTP conversation did: the same EHLO features, the same AUTH reply."""

    def __init__(self, transcript: dict[str, Any]) -> None:
        self.transcript = transcript

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        features = self.transcript["features_tls" if session.ssl else "features_plain"]
        return ehlo_lines(self.transcript.get("server", "replay"), features)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        reply = self.transcript.get("auth") or {"code": 535, "message": "5.7.3 Authentication unsuccessful"}
        return AuthResult(success=reply["code"] == 235, handled=False, message=f"{reply['code']} {reply['message']}")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self.transcript.get("sent") or {"code": 554, "message": "5.6.0 no message was recorded"}
        return f"{reply['code']} {reply['message']}"
