"""A thin client for Microsoft Graph and Exchange Online's admin API: JSON in and out, typed errors,
bounded retries, paging.

Retry policy (what is safe to repeat, bounded by ``network.attempts`` and ``network.max_wait_seconds``):

* 429, and 503 with Retry-After: the request was not processed; any request is retried, honouring
  Retry-After (exponential backoff when it is absent).
* 502, 503, 504, a reset connection or a read timeout: retried for reads and idempotent writes (PATCH, PUT,
  DELETE, upserts). A plain POST that got no answer may have been applied: it raises
  :class:`~runbook_lib.errors.OutcomeUnknown`, and the executor reads whether it happened before repeating it.
* codes the caller names (``retry_codes``): replication delays right after a write, such as
  ``NoBackingApplicationObject`` or ``Request_ResourceNotFound`` on a brand-new object.

Every retry and its wait is counted in the transport's :class:`~runbook_lib.wire.transport.Counts`, and so lands
in the record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

import requests

from ..config import knowledge
from ..config.params import Network
from ..errors import GraphError, OutcomeUnknown
from .transport import Transport

log = logging.getLogger(__name__)

IDEMPOTENT = {"GET", "PATCH", "PUT", "DELETE"}
TRANSIENT = {502, 503, 504}


def odata_quote(value: str) -> str:
    """A string literal for ``$filter``: single quotes doubled, then URL-encoded by requests."""
    return "'" + value.replace("'", "''") + "'"


def key_segment(value: str) -> str:
    """A value used inside a path key such as ``applications(appId='...')``."""
    return quote(odata_quote(value), safe="'=()")


def _error_codes(body: dict[str, Any]) -> tuple[str, str, set[str]]:
    error = body.get("error") or {}
    codes = {str(error.get("code", ""))}
    codes |= {str(d.get("code")) for d in error.get("details") or [] if d.get("code")}
    inner = error.get("innerError") or error.get("innererror") or {}
    return str(error.get("code", "")), str(error.get("message", "")), codes | {inner.get("code", "")} - {""}


class Graph:
    """Calls an API as the signed-in identity; ``token`` is called for a fresh bearer token."""

    def __init__(self, base_url: str, token: Callable[[], str], transport: Transport, network: Network) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.transport = transport
        self.network = network

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        retry_codes: Iterable[str] = (),
        missing_ok: bool = False,
        idempotent: bool | None = None,
    ) -> Any:
        """Send one call; return the JSON body (None for 204, or for 404 when ``missing_ok``)."""
        url = path if path.startswith("https://") else f"{self.base_url}{path}"
        repeatable = method in IDEMPOTENT if idempotent is None else idempotent
        retry_codes = set(retry_codes)
        attempts = self.network.attempts
        for attempt in range(1, attempts + 1):
            try:
                response = self.transport.session.request(
                    method,
                    url,
                    json=body,
                    params=params,
                    timeout=(self.network.connect_timeout, self.network.read_timeout),
                    headers={
                        "Authorization": f"Bearer {self.token()}",
                        "Accept": "application/json",
                        **(headers or {}),
                    },
                )
            except (requests.ConnectionError, requests.Timeout) as lost:
                kind = type(lost).__name__
                if not repeatable:
                    raise OutcomeUnknown(
                        f"{method} {path.split('?')[0]} got no answer ({kind}): it may or may not have been applied"
                    ) from None
                if attempt == attempts:
                    raise OutcomeUnknown(
                        f"{method} {path.split('?')[0]} got no answer after {attempts} attempts ({kind})",
                        fix="check the network path to Microsoft (proxy, firewall); "
                        "raise network.read_timeout if the service is slow, then run the step "
                        "again",
                    ) from None
                self._wait(method, path, None, kind, self._backoff(attempt, None), attempt)
                continue
            if response.status_code < 400:
                return response.json() if response.content else None
            error = self._error(response, method, path)
            if missing_ok and response.status_code == 404 and error.code != "MailboxNotEnabledForRESTAPI":
                return None
            wait = self._retry_wait(response, repeatable, error, retry_codes, attempt)
            if wait is None:
                raise error
            self._wait(method, path, response.status_code, error.code, wait, attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _wait(self, method: str, path: str, status: int | None, code: str, seconds: float, attempt: int) -> None:
        self.transport.counts.wait(f"{method} {path.split('?')[0]}", status, code, seconds, attempt)
        log.info("retrying %s %s after %s %s: waiting %.0f s", method, path, status or "no answer", code, seconds)
        self.transport.clock.sleep(seconds)

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), self.network.max_wait_seconds)
        return min(2.0**attempt, self.network.max_wait_seconds)

    def _retry_wait(
        self, response: requests.Response, repeatable: bool, error: GraphError, retry_codes: set[str], attempt: int
    ) -> float | None:
        if attempt >= self.network.attempts:
            return None
        status = response.status_code
        retry_after = response.headers.get("Retry-After")
        throttled = status == 429 or (status == 503 and retry_after is not None)
        transient = status in TRANSIENT and repeatable
        replicating = bool(retry_codes & error.codes)
        if not (throttled or transient or replicating):
            return None
        return self._backoff(attempt, retry_after)

    @staticmethod
    def _error(response: requests.Response, method: str, path: str) -> GraphError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        code, message, codes = _error_codes(body if isinstance(body, dict) else {})
        inner = (body.get("error") or {}).get("innerError") or {} if isinstance(body, dict) else {}
        request_id = inner.get("request-id") or response.headers.get("request-id", "")
        entry = next(
            (knowledge.lookup("graph", c) for c in [code, *sorted(codes)] if knowledge.lookup("graph", c)), None
        )
        return GraphError(
            response.status_code,
            code or f"HTTP{response.status_code}",
            message or response.reason or "",
            request_id,
            method,
            path.split("?")[0],
            codes=frozenset(codes),
            body=body if isinstance(body, dict) else {},
            fix=entry.fix if entry else "",
            step=entry.notebook if entry else "",
        )

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def get_all(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every item of a collection, following ``@odata.nextLink`` until it is absent."""
        items: list[dict[str, Any]] = []
        page = self.get(path, params=params)
        while True:
            items.extend(page.get("value", []))
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return items
            page = self.get(next_link)

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("POST", path, body=body, **kwargs)
