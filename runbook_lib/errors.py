"""Error types with a message a person can act on: what failed, why, and which step fixes it.

Notebooks show these without a stack trace (see ``runbook_lib.context.step``); the CLI prints them and
exits non-zero. No message may contain a secret: messages are built from codes, names and
request IDs only.
"""

from __future__ import annotations

from typing import Any

#: how much of a value a message quotes, and how long one problem's message may get: a parameter
#: can be megabytes long, and a message must stay readable
QUOTE_LIMIT = 60
MESSAGE_LIMIT = 600


def shorten(text: str, limit: int = 200) -> str:
    """At most ``limit`` characters of ``text``, saying how long the whole is when it was cut."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def quoted(value: str, limit: int = QUOTE_LIMIT) -> str:
    """``value`` quoted for a message, as ``repr`` would, but only its start when it is long."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value)} characters)"


class RunbookError(Exception):
    """Base error: ``fix`` says what to do, ``step`` names the notebook that does it."""

    def __init__(self, message: str, *, fix: str = "", step: str = "") -> None:
        self.message = message
        self.fix = fix
        self.step = step
        super().__init__(self.explain())

    def explain(self) -> str:
        parts = [self.message]
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        if self.step:
            parts.append(f"Step: {self.step}")
        return "\n".join(parts)


class ParamsError(RunbookError):
    """A parameter file or value is malformed; ``problems`` maps each field to what is wrong."""

    def __init__(self, source: str, problems: dict[str, str]) -> None:
        self.source = source
        # bounded whatever the validator quoted: an unknown key or a message can carry a huge value
        self.problems = {shorten(field): shorten(why, MESSAGE_LIMIT) for field, why in problems.items()}
        lines = [f"{source}: {len(problems)} invalid parameter(s)"]
        lines += [f"  - {field}: {why}" for field, why in self.problems.items()]
        super().__init__("\n".join(lines), fix="correct the fields listed above and run again")


class ReplayMissError(RunbookError):
    """Replay mode met a request its recording does not hold."""

    def __init__(self, method: str, url: str, recording: str) -> None:
        super().__init__(
            f"replay: no recorded answer for {method} {url} in recording {recording}",
            fix="the code now sends a request the recording lacks: regenerate the recordings "
            "with `make recordings`, or run in live mode",
        )


class AuthError(RunbookError):
    """Microsoft Entra sign-in failed; ``codes`` are the AADSTS numbers from msal's error dict."""

    def __init__(self, error: str, codes: list[int], description: str, *, fix: str = "", step: str = "") -> None:
        self.error = error
        self.codes = codes
        first_line = description.splitlines()[0] if description else error
        super().__init__(f"sign-in failed: {error}: {first_line}", fix=fix, step=step)


class GraphError(RunbookError):
    """Microsoft Graph answered with an error body; branch on ``code``, quote ``request_id``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str,
        method: str,
        url: str,
        *,
        codes: frozenset[str] = frozenset(),
        body: dict | None = None,
        fix: str = "",
        step: str = "",
    ) -> None:
        self.status = status
        self.body = body or {}  # the parsed error body (error bodies carry no secrets)
        self.code = code
        self.codes = codes | {code}
        self.request_id = request_id
        super().__init__(
            f"{method} {url} failed: HTTP {status} {code}: {message} (request-id {request_id or 'none'})",
            fix=fix,
            step=step,
        )


class StepFailed(RunbookError):
    """A step found something it must not paper over (duplicates, no Exchange Online, consent blocked)."""


class Interrupted(RunbookError):
    """The operator asked the run to stop (Ctrl-C, SIGTERM): the step stopped before its next request."""

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            fix="run the same command again: every step reads before it writes, so it "
            "continues from where the tenant is now",
        )


class OutcomeUnknown(RunbookError):
    """A write got no answer (timeout, reset connection) and no read could tell whether it happened."""


class LockHeld(RunbookError):
    """Another process holds the tenant's lock: two runs must never both create an application.
    ``holder`` is what the holder wrote into the lock file (pid, host, user, tenant, command, since)."""

    def __init__(self, tenant_id: str, application: str, holder: dict[str, Any], waited: float = 0.0) -> None:
        self.holder = holder
        if holder:
            who = (
                f"{holder.get('command', 'a run')} for tenant {holder.get('tenant', '?')} "
                f"(pid {holder.get('pid', '?')}, "
                f"user {holder.get('user', '?')} on {holder.get('host', '?')}) since {holder.get('since', '?')}"
            )
        else:
            who = "another process (it has not written its name yet)"
        after = f" after waiting {waited:g} s" if waited else ""
        super().__init__(
            f"tenant {tenant_id}, application {application!r}: locked by {who}{after}",
            fix="wait for it to finish, or run with --wait SECONDS",
        )
