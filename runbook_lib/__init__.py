"""Runbook kit: configure the Webex Connect Email app with Office 365 OAuth 2.0.

Notebooks call into this package; all logic lives here so that tests can reach it.
"""

import sys
from importlib.metadata import PackageNotFoundError, version

# jsonschema (under nbformat) loads an optional checker of IRI syntax that compiles a grammar when imported,
# over a second on every `runbook` command; notebooks hold no IRI to check, so the kit leaves it out.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

try:
    __version__ = version("webex-o365-runbook")
except PackageNotFoundError:  # running from a checkout without an install
    __version__ = "0.0.0"
