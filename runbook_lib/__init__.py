"""Runbook kit: configure the Webex Connect Email app with Office 365 OAuth 2.0.

Notebooks call into this package; all logic lives here so that tests can reach it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("webex-o365-runbook")
except PackageNotFoundError:  # running from a checkout without an install
    __version__ = "0.0.0"
