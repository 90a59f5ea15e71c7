"""The endpoints of one run: the cloud's row of ``data/clouds.yaml`` with any overrides applied."""
from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from .params import Params

CLOUDS: dict[str, dict] = yaml.safe_load(files("runbook_lib").joinpath("data/clouds.yaml").read_text())

#: Office 365 Exchange Online's well-known application (resource) ID, the same in every cloud.
EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"


@dataclass(frozen=True)
class Endpoints:
    tenant_id: str
    authority_host: str
    graph_url: str
    exchange_url: str
    smtp_scope_resource: str
    smtp_host: str
    smtp_port: int

    @property
    def authority(self) -> str:
        return f"https://{self.authority_host}/{self.tenant_id}"

    @property
    def graph(self) -> str:
        return f"{self.graph_url}/v1.0"

    @property
    def token_url(self) -> str:
        return f"{self.authority}/oauth2/v2.0/token"

    @property
    def authorize_url(self) -> str:
        return f"{self.authority}/oauth2/v2.0/authorize"

    @property
    def exchange_scope(self) -> str:
        return f"{self.exchange_url}/.default"

    @property
    def exchange_admin(self) -> str:
        """Exchange Online's admin REST endpoint (undocumented; what ExchangeOnlineManagement v3 uses)."""
        return f"{self.exchange_url}/adminapi/beta/{self.tenant_id}"

    @property
    def smtp_scope(self) -> str:
        return f"{self.smtp_scope_resource}/SMTP.Send"

    def graph_scope(self, name: str) -> str:
        return f"{self.graph_url}/{name}"


def for_params(params: "Params") -> Endpoints:
    """The cloud's endpoints with the parameter file's overrides on top."""
    row = dict(CLOUDS[params.cloud])
    overrides = params.endpoints.model_dump(exclude_none=True, exclude={"ca_bundle", "proxy"})
    row.update(overrides)
    return Endpoints(tenant_id=params.tenant_id, **row)
