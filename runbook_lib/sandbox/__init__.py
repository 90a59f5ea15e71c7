"""A simulated Microsoft tenant: the identity platform, Graph, Exchange Online's admin API and SMTP
submission as the kit uses them, with the shapes, status codes, error bodies and live behaviours of
the reference (tokens for resources, not hosts; delegated permissions as the signed-in user; an
eventually consistent directory; idempotent creation; throttling, slow answers and dropped connections).

It is how the demo recordings are produced (``runbook record-demos`` records the real code path
against it through a loopback HTTPS proxy), how tests exercise live and record mode without a
network (through that proxy, or on each service's own loopback port), and the base of the training
sandbox.
"""

from .mistakes import catalogue

#: the classic mistakes a trainer can inject (``runbook sandbox break``), described in ``data/faults.yaml`` and
#: listed without loading the simulated tenant; :data:`runbook_lib.sandbox.mistakes.FAULTS` implements them
FAULT_NAMES = tuple(catalogue())
