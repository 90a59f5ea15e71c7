"""Where HTTP goes: one transport per mode, behind one small interface, chosen from :data:`TRANSPORTS`.

Everything that talks to Microsoft (msal and the Graph client) uses the transport's ``requests.Session``,
so a replayed run exercises the live code path and only the layer underneath changes:

* :class:`LiveTransport`: the real endpoints (or the hosts the parameters' ``endpoints`` name).
* :class:`RecordTransport`: live, and every exchange is written to ``recordings/<tenant>/<step>.yaml``
  with secrets scrubbed (:mod:`runbook_lib.wire.recording`).
* :class:`ReplayTransport`: answers come from that file; a request it lacks is a :class:`ReplayMissError`.
* the sandbox's transport (:mod:`runbook_lib.sandbox.transport`): a simulated tenant on loopback for
  training. It is named in the table by its import path, so this module never imports the sandbox.

A transport also owns time (in replay, waits are virtual and "now" is when the recording was made, so
expiry checks replay the same verdicts on any day) and counts what was sent: reads, accepted writes and
failed write attempts separately, sign-ins, retries and every wait. No other module asks which mode is on.
"""

from __future__ import annotations

import importlib
import os
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import vcr
import yaml
from vcr.errors import CannotOverwriteExistingCassetteException

from .. import paths
from ..config.params import Params
from ..engine.journal import STOP_FILE_ENV
from ..errors import Interrupted, ReplayMissError, RunbookError
from .recording import REQUEST_HEADERS_DROPPED, Scrubber

MATCH_ON = ["method", "scheme", "host", "port", "path", "query"]
AUTH_PATHS = ("/oauth2/v2.0/token", "/oauth2/v2.0/devicecode", "/openid-configuration")
#: mode -> "module:class"; the sandbox registers itself here by name only
TRANSPORTS = {
    "live": "runbook_lib.wire.transport:LiveTransport",
    "record": "runbook_lib.wire.transport:RecordTransport",
    "replay": "runbook_lib.wire.transport:ReplayTransport",
    "sandbox": "runbook_lib.sandbox.transport:SandboxTransport",
}


@dataclass
class Counts:
    """Requests of one step: what the record reports and the request-economy benchmark counts."""

    reads: int = 0
    writes: int = 0
    failed_writes: int = 0
    auth: int = 0
    retries: int = 0
    waits: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def count(self, method: str, url: str, body: bytes | str | None, status: int | None) -> None:
        """Count one exchange once it has ended; ``status`` is None when no answer came."""
        path = urlsplit(url).path
        if path.endswith(AUTH_PATHS):
            self.auth += 1
        elif method == "GET" or _tunnelled_read(path, body):
            self.reads += 1
        elif status is not None and status < 400:
            self.writes += 1
        else:
            self.failed_writes += 1
        self.requests.append(f"{method} {path}")

    def wait(self, request: str, status: int | None, code: str, seconds: float, attempt: int) -> None:
        """Note a retry and the time waited before it."""
        self.retries += 1
        self.waits.append(
            {"request": request, "status": status, "code": code, "wait_seconds": seconds, "attempt": attempt}
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "reads": self.reads,
            "writes": self.writes,
            "failed_writes": self.failed_writes,
            "auth": self.auth,
            "retries": self.retries,
            "waits": self.waits,
        }


def _tunnelled_read(path: str, body: bytes | str | None) -> bool:
    """Exchange's admin API tunnels every cmdlet through POST .../InvokeCommand: Get-* and Test-* ones are reads."""
    if not path.endswith("/InvokeCommand") or not body:
        return False
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return any(f'"CmdletName":{gap}"{verb}-' in text for verb in ("Get", "Test") for gap in ("", " "))


class Clock:
    """Real time: live, record and sandbox runs."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class ReplayClock(Clock):
    """Virtual time starting when the recording was made; sleeping only moves it forward."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.elapsed = 0.0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def sleep(self, seconds: float) -> None:
        self.elapsed += seconds


class _Session(requests.Session):
    """Counts every exchange, stops before a request once a stop is asked for, and turns a replay miss
    into an error naming the request."""

    def __init__(self, counts: Counts, recording: Path | None) -> None:
        super().__init__()
        self.counts = counts
        self.recording = recording
        self.finished = False
        stop = os.environ.get(STOP_FILE_ENV)
        self.stop_file = Path(stop) if stop else None

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if self.finished:  # never fall through to the network once replay or record is switched off
            raise RunbookError(
                "this step has finished and sends no more requests",
                fix="run the notebook's setup cell again to start the step anew",
            )
        if self.stop_file is not None and self.stop_file.exists():
            raise Interrupted("the run was interrupted (Ctrl-C or a stop request) before this request was sent")
        method, url = request.method or "GET", request.url or ""
        try:
            response = super().send(request, **kwargs)
        except CannotOverwriteExistingCassetteException:
            raise ReplayMissError(method, _without_query(url), paths.shown(self.recording or "")) from None
        except requests.RequestException:
            self.counts.count(method, url, request.body, None)
            raise
        self.counts.count(method, url, request.body, response.status_code)
        return response


def _without_query(url: str) -> str:
    return url.split("?", 1)[0] + ("?..." if "?" in url else "")


@dataclass(frozen=True)
class SmtpTarget:
    """Where the SMTP client connects, and the TLS context it verifies the server with."""

    host: str
    port: int
    context: ssl.SSLContext


class Transport:
    """The session, clock and request counts of one step. Subclasses decide where requests go."""

    #: its HTTP interception holds for the whole process (vcrpy patches urllib3), so only one such transport may be
    #: open at a time: steps of several tenants read in one process take turns
    process_wide: bool = False

    def device_code_note(self, message: str) -> str | None:
        """What a device-code sign-in tells the person (``message``: Entra ID's instructions), or None when nobody
        signs in: a replay's answers were recorded, and nothing is shown that could send someone to a real page."""
        return message

    def __init__(self, params: Params, step: str) -> None:
        self.counts = Counts()
        self.recording = paths.resolve(params.recordings) / f"{step}.yaml"
        self.session = _Session(self.counts, self.recording)
        self.clock: Clock = Clock()
        self.ca_bundle = str(paths.resolve(params.endpoints.ca_bundle)) if params.endpoints.ca_bundle else None
        if params.endpoints.ca_bundle or params.endpoints.proxy:
            self.session.trust_env = False  # explicit parameters win over HTTPS_PROXY / REQUESTS_CA_BUNDLE
        if self.ca_bundle:
            self.session.verify = self.ca_bundle
        if params.endpoints.proxy:
            self.session.proxies = {"https": params.endpoints.proxy}

    @property
    def token_cache(self) -> Path | None:
        """Where msal keeps tokens between the notebooks of a run; None keeps them in memory, so a recorded
        or replayed step signs in within its own recording and replays on its own (nbval, JupyterLab)."""
        return None

    def smtp_target(self, host: str, port: int) -> SmtpTarget:
        """The SMTP server to connect to (the real one unless a subclass serves one)."""
        return SmtpTarget(host, port, ssl.create_default_context(cafile=self.ca_bundle))

    def smtp_done(self, transcript: dict[str, Any]) -> None:
        """What the SMTP server said, once the check is over (record mode keeps it)."""

    def close(self) -> None:
        """Stop sending: any later request is refused."""
        self.session.finished = True
        self.session.close()


class LiveTransport(Transport):
    """The real endpoints; tokens are shared by the notebooks of one run through a private cache file."""

    def __init__(self, params: Params, step: str) -> None:
        super().__init__(params, step)
        self._cache = paths.token_cache(params.tenant)

    @property
    def token_cache(self) -> Path | None:
        return self._cache


class _Cassette:
    """vcrpy around the session: every exchange recorded (scrubbed) or answered from the recording."""

    def __init__(self, recording: Path, record_mode: str, scrubber: Scrubber) -> None:
        recorder = vcr.VCR(
            record_mode=record_mode,
            match_on=MATCH_ON,
            filter_headers=REQUEST_HEADERS_DROPPED,
            before_record_request=scrubber.request,
            before_record_response=scrubber.response,
            decode_compressed_response=True,
        )
        self._cm: Any = recorder.use_cassette(str(recording))
        self._cm.__enter__()

    def close(self) -> None:
        cm, self._cm = self._cm, None
        if cm is not None:
            cm.__exit__(None, None, None)


class RecordTransport(Transport):
    """Live, and the exchanges written to the step's recording with every secret scrubbed; after
    writing, the file is checked for every value the scrubber replaced."""

    process_wide = True

    def __init__(self, params: Params, step: str) -> None:
        super().__init__(params, step)
        self.recording.parent.mkdir(parents=True, exist_ok=True)
        self.recording.unlink(missing_ok=True)
        self.smtp_recording.unlink(missing_ok=True)
        self.scrubber = Scrubber()
        self._cassette = _Cassette(self.recording, "all", self.scrubber)

    @property
    def smtp_recording(self) -> Path:
        return self.recording.with_suffix(".smtp.yaml")

    def smtp_done(self, transcript: dict[str, Any]) -> None:
        """Keep the SMTP conversation: the server's replies only, nothing the client sent."""
        self.smtp_recording.write_text(yaml.safe_dump(transcript, sort_keys=False), encoding="utf-8")

    def close(self) -> None:
        super().close()
        self._cassette.close()
        if self.recording.exists():
            leaks = self.scrubber.leaks(self.recording.read_text(encoding="utf-8"))
            if leaks:
                self.recording.unlink()
                raise RunbookError(
                    f"recording {self.recording.name} would have held secrets ({', '.join(leaks)}); it was deleted",
                    fix="report this as a bug in runbook_lib.wire.recording",
                )


def _recorded_at(cassette: Path) -> datetime | None:
    """The Date header of the first recorded response: replay's "now"."""
    if not cassette.exists():
        return None
    data = yaml.load(cassette.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    for interaction in data.get("interactions", []):
        for name, values in interaction["response"]["headers"].items():
            if name.lower() == "date":
                return parsedate_to_datetime(values[0])
    return None


class ReplayTransport(Transport):
    """Answers from the recording, in virtual time; SMTP from a loopback server replaying its transcript."""

    process_wide = True

    def device_code_note(self, message: str) -> str | None:
        return None

    def __init__(self, params: Params, step: str) -> None:
        super().__init__(params, step)
        self.clock = ReplayClock(_recorded_at(self.recording) or datetime.now(UTC))
        self._cassette = _Cassette(self.recording, "none", Scrubber())
        self._smtp_servers: list[Any] = []

    def smtp_target(self, host: str, port: int) -> SmtpTarget:
        transcript_file = self.recording.with_suffix(".smtp.yaml")
        if not transcript_file.exists():
            raise ReplayMissError("SMTP", f"{host}:{port}", paths.shown(transcript_file))
        from .smtp_server import LoopbackSMTP, ReplayHandler

        server = LoopbackSMTP(ReplayHandler(yaml.safe_load(transcript_file.read_text(encoding="utf-8"))))
        server.__enter__()
        self._smtp_servers.append(server)
        return SmtpTarget("127.0.0.1", server.port, server.client_context())

    def close(self) -> None:
        super().close()
        while self._smtp_servers:
            self._smtp_servers.pop().__exit__(None, None, None)
        self._cassette.close()


def transport_class(mode: str) -> type[Transport]:
    """The transport class of ``mode``, from :data:`TRANSPORTS`."""
    module, name = TRANSPORTS[mode].split(":")
    cls: type[Transport] = getattr(importlib.import_module(module), name)
    return cls


def open_transport(params: Params, step: str) -> Transport:
    """The transport of the parameters' mode."""
    return transport_class(params.mode)(params, step)
