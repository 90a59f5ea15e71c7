"""A simulated Microsoft tenant: the identity platform and the Graph endpoints the kit uses, with
the shapes, status codes and error bodies of the reference.

It is how the demo recordings are produced (``runbook record-demos`` records the real code path
against it through a loopback HTTPS proxy), how tests exercise live and record mode without a
network, and the base of the training sandbox.
"""
