"""JWT-shaped tokens for the simulated tenant, signed with an HMAC so that a scrubbed or forged
token is refused just as Entra ID would refuse it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(data: dict[str, Any]) -> str:
    return b64url(json.dumps(data, separators=(",", ":")).encode("utf-8"))


def sign(claims: dict[str, Any], key: str, marker: str = "") -> str:
    """A signed token; ``marker`` (a leak-test canary) is put literally into the signature."""
    head = b64url_json({"typ": "JWT", "alg": "HS256", "kid": "sandbox"}) + "." + b64url_json(claims)
    signature = marker + b64url(hmac.new(key.encode(), head.encode(), hashlib.sha256).digest())
    return f"{head}.{signature}"


def verify(token: str, key: str, marker: str = "") -> dict[str, Any] | None:
    """The claims of a token this tenant signed, or None."""
    try:
        header, payload, signature = token.split(".")
    except ValueError:
        return None
    expected = marker + b64url(hmac.new(key.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(signature, expected):
        return None
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
