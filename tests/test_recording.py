"""Scrubbing: what a recording may hold."""

from __future__ import annotations

import json

import pytest

from runbook_lib.sandbox import tokens
from runbook_lib.wire.recording import SCRUBBED_SIGNATURE, Scrubber

pytestmark = pytest.mark.unit


class FakeRequest:
    def __init__(self, body, content_type):
        self.body = body
        self.headers = {"Content-Type": content_type}


def test_token_response_keeps_claims_and_loses_signatures_and_secrets():
    access = tokens.sign({"aud": "https://graph.microsoft.com", "scp": "User.Read"}, "key")
    scrubber = Scrubber()
    response = {
        "status": {"code": 200},
        "headers": {"Set-Cookie": ["fpc=abc"], "Content-Type": ["application/json"], "Content-Length": ["999"]},
        "body": {
            "string": json.dumps(
                {
                    "access_token": access,
                    "refresh_token": "1.AXoAsecretvalue123",
                    "id_token": access,
                    "client_info": "eyJ1aWQiOiJ4In0",
                }
            ).encode()
        },
    }
    out = scrubber.response(response)
    body = json.loads(out["body"]["string"])
    assert body["access_token"].endswith("." + SCRUBBED_SIGNATURE)
    assert tokens.b64url_json({"aud": "https://graph.microsoft.com", "scp": "User.Read"}) in body["access_token"]
    assert body["refresh_token"] == "scrubbed-refresh_token"
    assert body["client_info"] == "eyJ1aWQiOiJ4In0"
    assert set(out["headers"]) == {"Content-Type"}
    assert scrubber.leaks(json.dumps(body)) == []
    assert scrubber.leaks(access)  # the original is remembered, to catch a leak


def test_secret_text_and_form_bodies():
    scrubber = Scrubber()
    response = {
        "status": {"code": 200},
        "headers": {"Content-Type": ["application/json"]},
        "body": {"string": json.dumps({"keyId": "k", "hint": "Abc", "secretText": "Abc8Q~verysecretvalue"}).encode()},
    }
    assert "verysecret" not in scrubber.response(response)["body"]["string"].decode()
    request = FakeRequest(
        "grant_type=client_credentials&client_secret=Abc8Q~verysecretvalue&client_id=x",
        "application/x-www-form-urlencoded",
    )
    assert "verysecret" not in scrubber.request(request).body
    assert "client_id=x" in request.body


def test_scrubbing_twice_is_stable():
    scrubber = Scrubber()
    once = scrubber.scrub_data({"secretText": "Abc8Q~verysecretvalue"})
    assert scrubber.scrub_data(once) == once
    assert scrubber.leaks(json.dumps(once)) == []


def test_error_codes_in_json_bodies_are_kept():
    scrubber = Scrubber()
    body = {"error": {"code": "Request_BadRequest", "details": [{"code": "NoBackingApplicationObject"}]}}
    assert scrubber.scrub_data(body) == body
