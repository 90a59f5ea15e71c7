"""Failures a live run meets, injected from a seed's ``faults`` (a list of dicts, kept in the state).

A fault matches a ``method`` and a ``path`` (a regular expression searched in the unquoted path) and
applies ``times`` times (default 1). Its kind is the first of these keys it has:

* ``delay``: seconds to wait before answering (a slow or hung service);
* ``reset``: the connection is closed without an answer (the client sees a connection error); with
  ``after: true`` the request is carried out first, so only its answer is lost (a create that timed out);
* ``status``: an error answer with ``code``, optionally ``message``, ``detail`` (a details code,
  ``detail_message``) and ``retry_after`` (seconds).
"""

from __future__ import annotations

import re
from typing import Any

from .messages import Response

KINDS = ("delay", "reset", "status")


def _kind(fault: dict[str, Any]) -> str:
    return next((k for k in KINDS if k in fault), "")


def take(faults: list[dict[str, Any]], kind: str, method: str, path: str) -> dict[str, Any] | None:
    """The first fault of ``kind`` still due for this request, one of its ``times`` used up."""
    for fault in faults:
        if (
            _kind(fault) == kind
            and fault.get("times", 1) > 0
            and fault["method"] == method
            and re.search(fault["path"], path)
        ):
            fault["times"] = fault.get("times", 1) - 1
            return fault
    return None


def error(fault: dict[str, Any]) -> Response:
    """The answer of a ``status`` fault, in Graph's error shape."""
    body: dict[str, Any] = {"error": {"code": fault["code"], "message": fault.get("message", fault["code"])}}
    if fault.get("detail"):
        body["error"]["details"] = [{"code": fault["detail"], "message": fault.get("detail_message", "")}]
    headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
    return Response(fault["status"], body, headers)
