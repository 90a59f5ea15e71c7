"""The one switch that decides where HTTP goes: ``replay``, ``live`` or ``record``.

Everything that talks to Microsoft (msal and the Graph client) uses the ``requests.Session`` built
here, so a replayed run exercises the live code path and only the layer underneath changes:

* ``live``: the real endpoints.
* ``record``: the real endpoints, and every exchange is written to ``recordings/<tenant>/<step>.yaml``
  with secrets scrubbed (:mod:`runbook_lib.recording`).
* ``replay``: answers come from that file; a request it lacks is a :class:`ReplayMissError`.
* ``sandbox``: a simulated tenant on loopback, one per trainee, its state kept between steps
  (:mod:`runbook_lib.sandbox.state`); the seed is ``tenant.yaml`` in the recordings folder.

The transport also owns time. In replay, waits (Retry-After, backoff, device-code polling) are
virtual and "now" is when the recording was made, so expiry checks replay the same verdicts on
any day. No other module asks which mode is on.
"""
from __future__ import annotations

import ssl
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import vcr
import yaml
from vcr.errors import CannotOverwriteExistingCassetteException

from . import paths
from .errors import ReplayMissError, RunbookError
from .params import Params
from .recording import REQUEST_HEADERS_DROPPED, Scrubber

MATCH_ON = ["method", "scheme", "host", "port", "path", "query"]
AUTH_PATHS = ("/oauth2/v2.0/token", "/oauth2/v2.0/devicecode", "/openid-configuration")


@dataclass
class Counts:
    """Requests of one step: what the request-economy benchmark and the record report."""

    reads: int = 0
    writes: int = 0
    auth: int = 0
    retries: int = 0
    waits: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def count(self, method: str, url: str, body: bytes | str | None = None) -> None:
        path = urlsplit(url).path
        if path.endswith(AUTH_PATHS):
            self.auth += 1
        elif method == "GET" or _tunnelled_read(path, body):
            self.reads += 1
        else:
            self.writes += 1
        self.requests.append(f"{method} {path}")

    def as_dict(self) -> dict[str, Any]:
        return {"reads": self.reads, "writes": self.writes, "auth": self.auth,
                "retries": self.retries, "waits": self.waits}


def _tunnelled_read(path: str, body: bytes | str | None) -> bool:
    """Exchange's admin API tunnels every cmdlet through POST .../InvokeCommand: Get-* ones are reads."""
    if not path.endswith("/InvokeCommand") or not body:
        return False
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return '"CmdletName": "Get-' in text or '"CmdletName":"Get-' in text


class Clock:
    """Real time: live and record runs."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

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
    """Counts every exchange and turns a replay miss into an error naming the request."""

    def __init__(self, counts: Counts, recording: Path | None) -> None:
        super().__init__()
        self.counts = counts
        self.recording = recording
        self.finished = False

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if self.finished:  # never fall through to the network once replay or record is switched off
            raise RunbookError("this step has finished and sends no more requests",
                               fix="run the notebook's setup cell again to start the step anew")
        self.counts.count(request.method or "GET", request.url or "", request.body)
        try:
            return super().send(request, **kwargs)
        except CannotOverwriteExistingCassetteException:
            raise ReplayMissError(request.method or "", _without_query_secrets(request.url or ""),
                                  str(self.recording)) from None


def _without_query_secrets(url: str) -> str:
    return url.split("?", 1)[0] + ("?..." if "?" in url else "")


def _recorded_at(cassette: Path) -> datetime | None:
    """The Date header of the first recorded response: replay's "now"."""
    if not cassette.exists():
        return None
    data = yaml.safe_load(cassette.read_text(encoding="utf-8")) or {}
    for interaction in data.get("interactions", []):
        for name, values in interaction["response"]["headers"].items():
            if name.lower() == "date":
                return parsedate_to_datetime(values[0])
    return None


@dataclass(frozen=True)
class SmtpTarget:
    """Where the SMTP client connects, and the TLS context it verifies the server with."""

    host: str
    port: int
    context: ssl.SSLContext


class Transport:
    """The session, clock and request counts of one step, in the mode the parameters name."""

    def __init__(self, params: Params, step: str) -> None:
        self.mode = params.mode
        self.counts = Counts()
        self.recording = paths.resolve(params.recordings) / f"{step}.yaml"
        self.scrubber = Scrubber()
        self.session = _Session(self.counts, self.recording if self.mode != "live" else None)
        if params.endpoints.ca_bundle or params.endpoints.proxy:
            self.session.trust_env = False  # explicit parameters win over HTTPS_PROXY / REQUESTS_CA_BUNDLE
        self._ca_bundle = str(paths.resolve(params.endpoints.ca_bundle)) if params.endpoints.ca_bundle else None
        self._smtp_servers: list[Any] = []
        self._stack = ExitStack()
        if self._ca_bundle:
            self.session.verify = self._ca_bundle
        if params.endpoints.proxy:
            self.session.proxies = {"https": params.endpoints.proxy}
        self._live_cache = paths.token_cache(params.tenant)
        self.clock: Clock = Clock()
        self._cassette_cm: Any = None
        if self.mode == "replay":
            start = _recorded_at(self.recording)
            self.clock = ReplayClock(start or datetime.now(timezone.utc))
            self._use_cassette("none")
        elif self.mode == "sandbox":
            self._open_sandbox(params)
        elif self.mode == "record":
            self.recording.parent.mkdir(parents=True, exist_ok=True)
            self.recording.unlink(missing_ok=True)
            self.smtp_recording.unlink(missing_ok=True)
            self._use_cassette("all")

    def _open_sandbox(self, params: Params) -> None:
        from .sandbox import state
        from .sandbox.server import serve

        self._sandbox = state.load(params.tenant, paths.resolve(params.recordings) / "tenant.yaml")
        self._sandbox_name = params.tenant
        self._sandbox_store = params.secret_store.model_dump(exclude_none=True)
        running = self._stack.enter_context(serve(self._sandbox))
        self.session.trust_env = False
        self.session.proxies = {"https": running.proxy}
        self.session.verify = self._ca_bundle = running.ca_bundle
        self._sandbox_smtp = running.smtp_port

    def _use_cassette(self, record_mode: str) -> None:
        recorder = vcr.VCR(
            record_mode=record_mode,
            match_on=MATCH_ON,
            filter_headers=REQUEST_HEADERS_DROPPED,
            before_record_request=self.scrubber.request,
            before_record_response=self.scrubber.response,
            decode_compressed_response=True,
        )
        self._cassette_cm = recorder.use_cassette(str(self.recording))
        self._cassette_cm.__enter__()

    @property
    def smtp_recording(self) -> Path:
        return self.recording.with_suffix(".smtp.yaml")

    def smtp_target(self, host: str, port: int) -> SmtpTarget:
        """The SMTP server for this mode: the real one, or in replay a loopback server answering as recorded."""
        if self.mode == "sandbox":
            return SmtpTarget("127.0.0.1", self._sandbox_smtp, ssl.create_default_context(cafile=self._ca_bundle))
        if self.mode != "replay":
            return SmtpTarget(host, port, ssl.create_default_context(cafile=self._ca_bundle))
        transcript_file = self.smtp_recording
        if not transcript_file.exists():
            raise ReplayMissError("SMTP", f"{host}:{port}", str(transcript_file))
        from .smtp_server import LoopbackSMTP, ReplayHandler

        server = LoopbackSMTP(ReplayHandler(yaml.safe_load(transcript_file.read_text(encoding="utf-8"))))
        server.__enter__()
        self._smtp_servers.append(server)
        return SmtpTarget("127.0.0.1", server.port, server.client_context())

    def smtp_done(self, transcript: dict[str, Any]) -> None:
        """In record mode, keep the SMTP conversation (server replies only; nothing the client sent)."""
        if self.mode == "record":
            self.smtp_recording.write_text(yaml.safe_dump(transcript, sort_keys=False), encoding="utf-8")

    @property
    def token_cache(self) -> Path | None:
        """Where msal keeps tokens between the notebooks of a live run. Recorded and replayed steps
        sign in within their own recording, so each recording replays on its own (nbval, JupyterLab)."""
        return None if self.mode in ("replay", "record", "sandbox") else self._live_cache

    def close(self) -> None:
        """Stop intercepting; in record mode write the recording and prove it holds no secret."""
        self.session.finished = True
        while self._smtp_servers:
            self._smtp_servers.pop().__exit__(None, None, None)
        if self.mode == "sandbox":
            from .sandbox import state

            state.save(self._sandbox_name, self._sandbox, self._sandbox_store)
        self._stack.close()
        if self._cassette_cm is not None:
            cm, self._cassette_cm = self._cassette_cm, None
            cm.__exit__(None, None, None)
        self.session.close()
        if self.mode == "record" and self.recording.exists():
            leaks = self.scrubber.leaks(self.recording.read_text(encoding="utf-8"))
            if leaks:
                self.recording.unlink()
                raise RunbookError(f"recording {self.recording.name} would have held secrets ({', '.join(leaks)}); "
                                   "it was deleted", fix="report this as a bug in runbook_lib.recording")
