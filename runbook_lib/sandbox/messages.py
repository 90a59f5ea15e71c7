"""Requests and responses as the simulated services see them, apart from how they were served
(through the proxy under a real host name, or directly on a loopback port)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote


@dataclass(frozen=True)
class Request:
    method: str
    host: str  # the host the request came to: it names endpoints in answers, never a resource
    target: str  # path and query, as sent
    headers: dict[str, str]  # names in lower case
    body: bytes = b""

    @property
    def path(self) -> str:
        return unquote(self.target.partition("?")[0])

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.target.partition("?")[2]).items()}

    def form(self, name: str) -> str:
        """A field of a form-encoded body (the identity platform's requests)."""
        return (parse_qs(self.body.decode()).get(name) or [""])[0]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] | None = None
    raw: bytes | None = None
    reset: bool = False  # close the connection without answering (a ``reset`` fault)

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        if self.body is None:
            return b""
        return json.dumps(self.body).encode("utf-8")


class Service(Protocol):
    """One of the tenant's services (sign-in, Graph, Exchange's admin API)."""

    def handle(self, request: Request) -> Response: ...


def iso(moment: datetime) -> str:
    """A timestamp as Graph writes them."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
