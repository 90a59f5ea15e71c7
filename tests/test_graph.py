"""The Graph client against scripted answers: the requests adapter is swapped, nothing is patched."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from runbook_lib.config import params
from runbook_lib.config.params import Network
from runbook_lib.errors import GraphError, OutcomeUnknown
from runbook_lib.wire.graph import Graph, odata_quote
from runbook_lib.wire.transport import LiveTransport, ReplayClock

pytestmark = pytest.mark.unit

MAX_ATTEMPTS = Network().attempts


class Scripted(BaseAdapter):
    """Answers each request with the next scripted (status, body, headers), or raises it if it is an exception."""

    def __init__(self, answers: list[tuple[int, Any, dict[str, str]]]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body, headers = answer
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode() if body is not None else b""
        response.headers.update(headers)
        response.request = request
        response.url = request.url
        return response

    def close(self) -> None:
        pass


def error(code: str, detail: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {
        "error": {"code": code, "message": f"{code} happened", "innerError": {"request-id": "rid-123"}}
    }
    if detail:
        body["error"]["details"] = [{"code": detail, "message": "x"}]
    return body


@pytest.fixture
def graph(demo_raw, tmp_path):
    demo_raw.update(mode="live", recordings=str(tmp_path))
    transport = LiveTransport(params.validate(demo_raw), "test")
    transport.clock = ReplayClock(transport.clock.now())  # waits are counted, not slept
    made = {}

    def build(answers):
        adapter = Scripted(answers)
        transport.session.mount("https://", adapter)
        made["adapter"] = adapter
        return Graph("https://graph.microsoft.com/v1.0", lambda: "token", transport, Network())

    build.transport = transport
    build.made = made
    return build


def test_throttling_honours_retry_after(graph):
    client = graph([(429, error("TooManyRequests"), {"Retry-After": "7"}), (200, {"id": "1"}, {})])
    assert client.get("/applications/1") == {"id": "1"}
    counts = graph.transport.counts
    assert counts.retries == 1 and counts.waits[0]["wait_seconds"] == 7 and counts.waits[0]["status"] == 429
    assert graph.transport.clock.elapsed == 7


def test_post_is_not_retried_after_an_ambiguous_5xx(graph):
    client = graph([(500, error("InternalServerError"), {})])
    with pytest.raises(GraphError) as caught:
        client.post("/applications", {"displayName": "x"})
    assert caught.value.status == 500 and caught.value.request_id == "rid-123"


def test_get_is_retried_after_5xx_with_backoff(graph):
    client = graph([(502, None, {}), (503, None, {}), (200, {"ok": True}, {})])
    assert client.get("/x") == {"ok": True}
    assert [w["wait_seconds"] for w in graph.transport.counts.waits] == [2.0, 4.0]


def test_replication_codes_are_retried_only_when_named(graph):
    answers = [(400, error("Request_BadRequest", "NoBackingApplicationObject"), {}), (201, {"id": "sp"}, {})]
    client = graph(list(answers))
    assert client.post("/servicePrincipals", {"appId": "a"}, retry_codes=["NoBackingApplicationObject"]) == {"id": "sp"}
    client = graph(list(answers))
    with pytest.raises(GraphError) as caught:
        client.post("/servicePrincipals", {"appId": "a"})
    assert "NoBackingApplicationObject" in caught.value.codes


def test_retries_are_bounded_and_the_last_error_has_its_request_id(graph):
    client = graph([(429, error("TooManyRequests"), {"Retry-After": "1"})] * MAX_ATTEMPTS)
    with pytest.raises(GraphError) as caught:
        client.get("/x")
    assert caught.value.code == "TooManyRequests" and "rid-123" in str(caught.value)
    assert "wait a few minutes" in caught.value.fix
    assert len(graph.made["adapter"].sent) == MAX_ATTEMPTS


def test_paging_follows_next_link(graph):
    client = graph(
        [
            (200, {"value": [1, 2], "@odata.nextLink": "https://graph.microsoft.com/v1.0/x?$skiptoken=a"}, {}),
            (200, {"value": [3]}, {}),
        ]
    )
    assert client.get_all("/x") == [1, 2, 3]
    assert graph.made["adapter"].sent[1].url.endswith("$skiptoken=a")


def test_missing_ok_and_error_fix_from_knowledge_base(graph):
    client = graph([(404, error("Request_ResourceNotFound"), {}), (403, error("Authorization_RequestDenied"), {})])
    assert client.get("/servicePrincipals(appId='x')", missing_ok=True) is None
    with pytest.raises(GraphError) as caught:
        client.get("/applications")
    assert caught.value.step == "02_azure_app_registration" and "Application Administrator" in caught.value.fix


def test_requests_are_counted_and_bearer_sent(graph):
    client = graph([(200, {"value": []}, {}), (204, None, {})])
    client.get("/applications")
    client.request("PATCH", "/applications/1", body={"a": 1})
    counts = graph.transport.counts
    assert (counts.reads, counts.writes, counts.failed_writes) == (1, 1, 0)
    assert graph.made["adapter"].sent[0].headers["Authorization"] == "Bearer token"


def test_odata_quote_doubles_quotes():
    assert odata_quote("O'Brien's app") == "'O''Brien''s app'"


def test_a_write_refused_is_a_failed_attempt_not_a_write(graph):
    client = graph([(400, error("Request_BadRequest"), {})])
    with pytest.raises(GraphError):
        client.post("/applications", {"displayName": "x"})
    counts = graph.transport.counts
    assert (counts.writes, counts.failed_writes) == (0, 1)


def test_reads_are_retried_after_a_reset_connection_or_a_read_timeout(graph):
    client = graph([requests.ConnectionError("reset"), requests.ReadTimeout("slow"), (200, {"ok": 1}, {})])
    assert client.get("/users/x") == {"ok": 1}
    assert [w["code"] for w in graph.transport.counts.waits] == ["ConnectionError", "ReadTimeout"]


def test_a_post_without_an_answer_is_never_sent_twice(graph):
    client = graph([requests.ReadTimeout("slow"), (201, {"id": "dup"}, {})])
    with pytest.raises(OutcomeUnknown) as caught:
        client.post("/servicePrincipals/x/appRoleAssignedTo", {"a": 1})
    assert "may or may not have been applied" in caught.value.message
    assert len(graph.made["adapter"].sent) == 1 and graph.transport.counts.failed_writes == 1


def test_an_idempotent_upsert_is_sent_again_after_a_lost_answer(graph):
    client = graph([requests.ReadTimeout("slow"), (201, {"id": "app"}, {})])
    assert client.request("PATCH", "/applications(uniqueName='k')", body={}, idempotent=True) == {"id": "app"}


def test_a_read_that_never_answers_fails_bounded_with_a_fix(graph):
    client = graph([requests.ReadTimeout("slow")] * MAX_ATTEMPTS)
    with pytest.raises(OutcomeUnknown) as caught:
        client.get("/users/x")
    assert "network.read_timeout" in caught.value.fix and len(graph.made["adapter"].sent) == MAX_ATTEMPTS


def test_a_post_is_not_retried_after_503_without_retry_after(graph):
    client = graph([(503, error("ServiceUnavailable"), {})])
    with pytest.raises(GraphError):
        client.post("/applications", {"displayName": "x"})
    assert len(graph.made["adapter"].sent) == 1
