"""The endpoints of one run: the cloud's row of ``data/clouds.yaml`` with any host overrides applied.

Overrides (a proxy, a private endpoint, a test stand-in) change *where* requests go, never *which
resource* a token is for: scopes always come from the cloud's resource identifiers. What Webex Connect
is told (step 4) always uses the cloud's public hosts, whatever the kit itself talks to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .clouds import CLOUDS, EXCHANGE_APP_ID, GRAPH_APP_ID

if TYPE_CHECKING:
    from .params import Params

#: the row fields a parameter file may override: hosts and ports only
HOST_FIELDS = ("authority_host", "graph_url", "exchange_url", "smtp_host", "smtp_port")


@dataclass(frozen=True)
class Endpoints:
    tenant_id: str
    authority_host: str
    graph_url: str
    graph_resource: str
    exchange_url: str
    exchange_resource: str
    smtp_scope_resource: str
    smtp_host: str
    smtp_port: int
    #: the cloud's own authority host and SMTP host/port: what Webex Connect uses
    public_authority_host: str
    public_smtp_host: str
    public_smtp_port: int

    @property
    def authority(self) -> str:
        return f"https://{self.authority_host}/{self.tenant_id}"

    @property
    def graph(self) -> str:
        return f"{self.graph_url}/v1.0"

    @property
    def authorize_url(self) -> str:
        """The authorize URL as the kit reaches it (the verify probe)."""
        return f"{self.authority}/oauth2/v2.0/authorize"

    @property
    def webex_authorize_url(self) -> str:
        """The Authorization URL Webex Connect is given: the cloud's own host, tenant-specific."""
        return f"https://{self.public_authority_host}/{self.tenant_id}/oauth2/v2.0/authorize"

    @property
    def webex_token_url(self) -> str:
        """The Access Token and Refresh Token URL Webex Connect is given."""
        return f"https://{self.public_authority_host}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def exchange_scope(self) -> str:
        return f"{self.exchange_resource}/.default"

    @property
    def exchange_admin(self) -> str:
        """Exchange Online's admin REST endpoint (undocumented; what ExchangeOnlineManagement v3 uses)."""
        return f"{self.exchange_url}/adminapi/beta/{self.tenant_id}"

    @property
    def smtp_scope(self) -> str:
        return f"{self.smtp_scope_resource}/SMTP.Send"

    @property
    def generate_token_scope(self) -> str:
        """The Scope Webex Connect's Generate Token asks for: SMTP.Send, and a refresh token (offline_access)."""
        return f"offline_access {self.smtp_scope}"

    def delegated_permissions(self, scope: str) -> list[tuple[str, str]]:
        """Each delegated permission a scope parameter asks for, as (resource application ID, permission): OpenID
        Connect's scopes and bare names are Microsoft Graph's; a URL names its resource (Exchange Online's SMTP
        resource, Graph's, or Exchange's admin resource). Consent must cover every one of them."""
        resources = {
            self.graph_resource: GRAPH_APP_ID,
            self.exchange_resource: EXCHANGE_APP_ID,
            self.smtp_scope_resource: EXCHANGE_APP_ID,
        }
        found = []
        for item in scope.split():
            resource, _, name = item.rpartition("/") if "://" in item else (self.graph_resource, "/", item)
            found.append((resources.get(resource.rstrip("/"), resource), name))
        return found

    def graph_scope(self, name: str) -> str:
        return f"{self.graph_resource}/{name}"


def for_params(params: Params) -> Endpoints:
    """The cloud's endpoints with the parameter file's host overrides on top."""
    row = dict(CLOUDS[params.cloud])
    public = {
        "public_authority_host": row["authority_host"],
        "public_smtp_host": row["smtp_host"],
        "public_smtp_port": row["smtp_port"],
    }
    row.update(params.endpoints.model_dump(exclude_none=True, include=set(HOST_FIELDS)))
    return Endpoints(tenant_id=params.tenant_id, **row, **public)
