"""What a recording may hold: every secret is replaced by a stable placeholder before it is written.

vcrpy's ``filter_headers`` only covers request headers; tokens travel in response bodies and
cookies, so both directions are scrubbed here. Placeholders keep the shape the code needs on
replay: a JWT keeps its header and claims (msal reads ``aud`` from the id_token, verify reads
``roles``) and loses its signature, which is what makes it a credential.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ..config.params import GUID_RE

#: JSON fields whose value is a credential (token responses, addPassword); JWTs among them keep their claims
JSON_SECRET_FIELDS = {
    "access_token",
    "refresh_token",
    "id_token",
    "secretText",
    "device_code",
    "client_secret",
    "password",
}
#: form fields of token requests whose value is a credential (``code`` is an authorization code here,
#: while in a JSON error body it is an error code and must stay)
FORM_SECRET_FIELDS = {
    "client_secret",
    "client_assertion",
    "assertion",
    "code",
    "code_verifier",
    "device_code",
    "refresh_token",
    "password",
}
JWT_FIELDS = {"access_token", "id_token", "token"}
JWT_RE = re.compile(r"^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$")
SCRUBBED_SIGNATURE = "scrubbed-signature"
REQUEST_HEADERS_DROPPED = ["authorization", "cookie", "x-client-secret"]
RESPONSE_HEADERS_DROPPED = {"set-cookie", "content-length"}


class Scrubber:
    """Replaces secrets in recorded exchanges and remembers the originals, to prove none leaked."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def placeholder(self, field: str, value: str) -> str:
        if "scrubbed-" in value or value.endswith("." + SCRUBBED_SIGNATURE):
            return value  # vcrpy runs the hooks more than once on the same exchange
        if len(value) >= 8 and not GUID_RE.match(value):  # a GUID is an identifier (a pasted Secret ID), public
            self.seen.add(value)
        if field in JWT_FIELDS and JWT_RE.match(value):
            header, claims, _ = value.split(".")
            if len(_) >= 8:
                self.seen.add(_)
            return f"{header}.{claims}.{SCRUBBED_SIGNATURE}"
        if field == "secretText":  # keep the hint (its first 3 characters, which Graph shows anyway)
            return f"{value[:3]}-scrubbed-{field}"
        return f"scrubbed-{field}"

    def scrub_data(self, data: Any) -> Any:
        if isinstance(data, dict):
            return {
                k: self.placeholder(k, v) if k in JSON_SECRET_FIELDS and isinstance(v, str) else self.scrub_data(v)
                for k, v in data.items()
            }
        if isinstance(data, list):
            return [self.scrub_data(v) for v in data]
        if isinstance(data, str) and JWT_RE.match(data):
            return self.placeholder("token", data)
        return data

    def scrub_body(self, body: bytes | str | None, content_type: str) -> bytes | str | None:
        if not body:
            return body
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        if "json" in content_type or text.lstrip().startswith(("{", "[")):
            try:
                scrubbed = json.dumps(self.scrub_data(json.loads(text)))
            except ValueError:
                scrubbed = text
        elif "x-www-form-urlencoded" in content_type:
            pairs = parse_qsl(text, keep_blank_values=True)
            scrubbed = urlencode([(k, self.placeholder(k, v) if k in FORM_SECRET_FIELDS else v) for k, v in pairs])
        else:
            scrubbed = text
        return scrubbed.encode("utf-8") if isinstance(body, bytes) else scrubbed

    def request(self, request: Any) -> Any:
        """vcrpy ``before_record_request`` hook."""
        content_type = request.headers.get("Content-Type", "") or ""
        request.body = self.scrub_body(request.body, content_type)
        return request

    def response(self, response: dict) -> dict:
        """vcrpy ``before_record_response`` hook."""
        headers = {k: v for k, v in response["headers"].items() if k.lower() not in RESPONSE_HEADERS_DROPPED}
        content_type = next((v[0] for k, v in headers.items() if k.lower() == "content-type"), "")
        response["headers"] = headers
        response["body"]["string"] = self.scrub_body(response["body"]["string"], content_type)
        return response

    def leaks(self, text: str) -> list[str]:
        """Which remembered secrets (by a short fingerprint, never the value) appear in ``text``."""
        return [f"{len(v)}-character value starting {v[:2]!r}" for v in self.seen if v in text]
