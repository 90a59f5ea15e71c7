"""Microsoft's clouds as data (``data/clouds.yaml``: hosts and resources per cloud) and the identifiers that are
the same in every cloud: what the parameters check a cloud's name against, and what the endpoints of a run are
built from (:mod:`runbook_lib.config.endpoints`)."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import yaml

CLOUDS: dict[str, dict[str, Any]] = yaml.safe_load(files("runbook_lib").joinpath("data/clouds.yaml").read_text())

#: Office 365 Exchange Online's well-known application (resource) ID, the same in every cloud.
EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
#: Microsoft Graph's well-known application (resource) ID, the same in every cloud.
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
#: OpenID Connect's scopes: Microsoft Graph's delegated permissions, consented like any other (Learn: "Configure
#: permission classifications")
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
