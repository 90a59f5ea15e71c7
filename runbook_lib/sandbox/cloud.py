"""The simulated tenant's cloud: which host serves which service, which resources tokens are issued
for, and which first-party clients may ask for which resource.

Hosts and resources are kept apart on purpose: a proxy, a private endpoint or this sandbox served on
a loopback port changes where requests go, never which resource a token is for.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..config.clouds import CLOUDS, EXCHANGE_APP_ID, GRAPH_APP_ID

_GLOBAL = CLOUDS["global"]
LOGIN_HOST: str = _GLOBAL["authority_host"]
GRAPH: str = _GLOBAL["graph_url"]
EXCHANGE: str = _GLOBAL["exchange_url"]
SMTP: str = _GLOBAL["smtp_scope_resource"]

#: the real host of each service, as clients name it in CONNECT
SERVICES: dict[str, str] = {
    LOGIN_HOST: "login",
    str(urlsplit(GRAPH).hostname): "graph",
    str(urlsplit(EXCHANGE).hostname): "exchange",
}

#: resource identifier (a scope's prefix, a token's ``aud``) -> the resource's application ID
RESOURCES: dict[str, str] = {GRAPH: GRAPH_APP_ID, EXCHANGE: EXCHANGE_APP_ID, SMTP: EXCHANGE_APP_ID}

#: first-party public clients -> the resources they are preauthorized for, with the scopes allowed (None: any);
#: any other resource or scope gets AADSTS65002
PREAUTHORIZED: dict[str, dict[str, frozenset[str] | None]] = {
    "14d82eec-204b-4c2f-b7e8-296a70dab67e": {GRAPH: None},  # Microsoft Graph Command Line Tools
    "fb78d390-0c51-40cd-8e17-fdbfab77341b": {EXCHANGE: None},  # Exchange Online PowerShell
    "04b07795-8ddb-461a-bbee-02f9e1bf7b46": {GRAPH: frozenset({"User.Read"})},  # Azure CLI
}
