"""A thin Microsoft Graph client: JSON in and out, typed errors, bounded retries, paging.

Retry policy (what is safe to repeat):

* 429, and 503 with Retry-After: the request was not processed; every method is retried,
  honouring Retry-After (exponential backoff when it is absent).
* other 5xx: retried for GET and PATCH only. A POST that failed with 500/502/504 may have been
  applied, so it is reported instead; re-running the step is safe because every step reads first.
* codes the caller names (``retry_codes``): replication delays right after a write, such as
  ``NoBackingApplicationObject`` or ``Request_ResourceNotFound`` on a brand-new object.

Every retry and its wait is counted in the transport's :class:`Counts` and so lands in the record.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable
from urllib.parse import quote

import requests

from . import knowledge
from .errors import GraphError
from .transport import Transport

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
MAX_WAIT = 60.0
TIMEOUT = (10, 60)
IDEMPOTENT = {"GET", "PATCH", "PUT", "DELETE"}


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
    """Calls Graph as the signed-in operator; ``token`` is called for a fresh bearer token."""

    def __init__(self, base_url: str, token: Callable[[], str], transport: Transport) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.transport = transport

    def request(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
                retry_codes: Iterable[str] = (), missing_ok: bool = False) -> Any:
        """Send one call; return the JSON body (None for 204, or for 404 when ``missing_ok``)."""
        url = path if path.startswith("https://") else f"{self.base_url}{path}"
        retry_codes = set(retry_codes)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            response = self.transport.session.request(
                method, url, json=body, params=params, timeout=TIMEOUT,
                headers={"Authorization": f"Bearer {self.token()}", "Accept": "application/json"},
            )
            if response.status_code < 400:
                return response.json() if response.content else None
            error = self._error(response, method, path)
            if missing_ok and response.status_code == 404 and error.code != "MailboxNotEnabledForRESTAPI":
                return None
            wait = self._retry_wait(response, method, error, retry_codes, attempt)
            if wait is None:
                raise error
            self.transport.counts.retries += 1
            self.transport.counts.waits.append(
                {"request": f"{method} {path}", "status": response.status_code, "code": error.code,
                 "wait_seconds": wait, "attempt": attempt})
            log.info("retrying %s %s after HTTP %s %s: waiting %.0f s", method, path, response.status_code,
                     error.code, wait)
            self.transport.clock.sleep(wait)
        raise error  # the last attempt's error, after MAX_ATTEMPTS

    def _retry_wait(self, response: requests.Response, method: str, error: GraphError,
                    retry_codes: set[str], attempt: int) -> float | None:
        if attempt >= MAX_ATTEMPTS:
            return None
        status = response.status_code
        retry_after = response.headers.get("Retry-After")
        throttled = status == 429 or (status == 503 and retry_after is not None)
        transient = status >= 500 and method in IDEMPOTENT
        replicating = bool(retry_codes & error.codes)
        if not (throttled or transient or replicating):
            return None
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), MAX_WAIT)
        return min(2.0 ** attempt, MAX_WAIT)

    @staticmethod
    def _error(response: requests.Response, method: str, path: str) -> GraphError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        code, message, codes = _error_codes(body if isinstance(body, dict) else {})
        inner = (body.get("error") or {}).get("innerError") or {} if isinstance(body, dict) else {}
        request_id = inner.get("request-id") or response.headers.get("request-id", "")
        entry = next((knowledge.lookup("graph", c) for c in [code, *sorted(codes)] if knowledge.lookup("graph", c)), None)
        return GraphError(response.status_code, code or f"HTTP{response.status_code}", message or response.reason or "",
                          request_id, method, path.split("?")[0], codes=frozenset(codes),
                          body=body if isinstance(body, dict) else {},
                          fix=entry.fix if entry else "", step=entry.notebook if entry else "")

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

    def patch(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("PATCH", path, body=body, **kwargs)
