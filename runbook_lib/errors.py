"""Error types with a message a person can act on: what failed, why, and which step fixes it.

Notebooks show these without a stack trace (see ``runbook_lib.step``); the CLI prints them and
exits non-zero. No message may contain a secret: messages are built from codes, names and
request IDs only.
"""
from __future__ import annotations


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
        self.problems = problems
        lines = [f"{source}: {len(problems)} invalid parameter(s)"]
        lines += [f"  - {field}: {why}" for field, why in problems.items()]
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

    def __init__(self, status: int, code: str, message: str, request_id: str, method: str, url: str,
                 *, codes: frozenset[str] = frozenset(), body: dict | None = None, fix: str = "",
                 step: str = "") -> None:
        self.status = status
        self.body = body or {}   # the parsed error body (error bodies carry no secrets)
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
