"""SMTP: the real client code against a real loopback server answering as a recording says."""

from __future__ import annotations

import base64

import pytest
import yaml

from runbook_lib.config import params
from runbook_lib.context.step import Step
from runbook_lib.errors import ReplayMissError
from runbook_lib.tenant import smtp

pytestmark = pytest.mark.unit

TRANSCRIPT = {
    "host": "smtp.office365.com",
    "port": 587,
    "server": "BN9PR03CA0123.outlook.office365.com Hello",
    "features_plain": ["SIZE 157286400", "PIPELINING", "STARTTLS", "8BITMIME"],
    "starttls": "220 2.0.0 SMTP server ready",
    "features_tls": ["SIZE 157286400", "PIPELINING", "AUTH LOGIN XOAUTH2", "8BITMIME"],
    "auth": {
        "code": 535,
        "message": "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox.",
    },
}


def test_xoauth2_initial_response():
    decoded = base64.b64decode(smtp.xoauth2("a@b.com", "tok")).decode()
    assert decoded == "user=a@b.com\x01auth=Bearer tok\x01\x01"


def test_replay_serves_the_recorded_conversation_over_starttls(tmp_path, demo_raw):
    demo_raw["recordings"] = str(tmp_path)
    (tmp_path / "05_verify.smtp.yaml").write_text(yaml.safe_dump(TRANSCRIPT))
    step = Step("05_verify", params.validate(demo_raw))
    transcript = smtp.probe(step, token="a-token")
    step.finish()
    assert transcript["features_plain"] == TRANSCRIPT["features_plain"]
    assert smtp.offers_xoauth2(transcript["features_tls"]) and not smtp.offers_xoauth2(transcript["features_plain"])
    assert transcript["auth"]["code"] == 535 and "5.7.139" in transcript["auth"]["message"]


def test_replay_without_an_smtp_recording_names_it(tmp_path, demo_raw):
    demo_raw["recordings"] = str(tmp_path)
    step = Step("05_verify", params.validate(demo_raw))
    with pytest.raises(ReplayMissError, match="05_verify.smtp.yaml"):
        smtp.probe(step)
    step.finish()
