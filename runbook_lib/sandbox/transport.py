"""The transport of ``mode: sandbox``: the trainee's simulated tenant, served on loopback for one step.

The tenant is loaded from its state file (or its seed), served as an HTTPS proxy with a throwaway CA
for the length of the step, and saved afterwards, so the notebooks can be run in any order and re-run.
It plugs into :data:`runbook_lib.wire.transport.TRANSPORTS` by name: the sandbox depends on the transport
interface, never the reverse.
"""

from __future__ import annotations

import ssl
from contextlib import ExitStack

from .. import paths
from ..config.params import Params
from ..wire.transport import SmtpTarget, Transport
from . import state
from .server import serve


class SandboxTransport(Transport):
    """Requests go to the trainee's simulated tenant through a loopback proxy."""

    def __init__(self, params: Params, step: str) -> None:
        super().__init__(params, step)
        self._name = params.tenant
        self._store = params.secret_store.model_dump(exclude_none=True)
        self._stack = ExitStack()
        # the trainee's sandbox is this step's from its load to its save: a trainer's break or repair meanwhile waits
        self._stack.enter_context(state.locked(params.tenant, holder=f"step {step}"))
        try:
            self._tenant = state.load(params.tenant, paths.resolve(params.recordings) / "tenant.yaml")
            running = self._stack.enter_context(serve(self._tenant))
        except BaseException:
            self._stack.close()
            raise
        self.session.trust_env = False
        self.session.proxies = {"https": running.proxy}
        self.session.verify = self.ca_bundle = running.ca_bundle
        self._smtp_port = running.smtp_port

    def device_code_note(self, message: str) -> str | None:
        """The simulated tenant signs the person in by itself: never Microsoft's page, which knows no such code."""
        return "Sandbox: a simulated sign-in, completed by the simulated tenant itself (no page to open, no code)."

    def smtp_target(self, host: str, port: int) -> SmtpTarget:
        return SmtpTarget("127.0.0.1", self._smtp_port, ssl.create_default_context(cafile=self.ca_bundle))

    def close(self) -> None:
        try:
            super().close()
            state.save(self._name, self._tenant, self._store)
        finally:
            self._stack.close()
