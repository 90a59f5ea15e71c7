from pathlib import Path

import pytest
import yaml

from runbook_lib.config import params
from runbook_lib.errors import ParamsError

from conftest import DEMO

pytestmark = pytest.mark.unit


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_file_is_valid():
    p = params.load(DEMO)
    assert p.tenant == "contoso" and p.mode == "replay" and p.recordings == "recordings/contoso"


def test_three_bad_fields_are_named_in_one_error(tmp_path, demo_raw):
    demo_raw["tenant_id"] = "not a tenant"
    demo_raw["webex"]["forwarding_address"] = "abc@mail-us.imiconnect.io"
    demo_raw["application"]["secret_lifetime_days"] = 1000
    with pytest.raises(ParamsError) as caught:
        params.load(write(tmp_path, demo_raw))
    problems = caught.value.problems
    assert set(problems) == {"tenant_id", "webex.forwarding_address", "application.secret_lifetime_days"}
    assert "32 hexadecimal characters" in problems["webex.forwarding_address"]
    assert "3 invalid parameter(s)" in str(caught.value)


@pytest.mark.parametrize(
    "where, value",
    [
        (("client_secret",), "abc123"),
        (("secret_store",), "the-secret-itself"),
        (("operator", "secret"), "hunter2"),
        (("operator", "password"), "hunter2"),
    ],
)
def test_secret_values_are_rejected_without_echoing_them(demo_raw, where, value):
    target = demo_raw
    for key in where[:-1]:
        target = target.setdefault(key, {})
    target[where[-1]] = value
    with pytest.raises(ParamsError) as caught:
        params.validate(demo_raw)
    assert ".".join(where) in caught.value.problems
    assert "secret value" in caught.value.problems[".".join(where)]
    assert value not in str(caught.value)


def test_unknown_keys_and_missing_fields(demo_raw):
    demo_raw["colour"] = "blue"
    del demo_raw["secret_store"]
    with pytest.raises(ParamsError) as caught:
        params.validate(demo_raw)
    assert caught.value.problems == {"colour": "unknown key", "secret_store": "required but missing"}


def test_secret_reference_needs_exactly_one_kind(demo_raw):
    demo_raw["secret_store"] = {"env": "A", "file": "b"}
    with pytest.raises(ParamsError, match="exactly one of env, file or keyring"):
        params.validate(demo_raw)


def test_client_credentials_needs_a_secret_reference_and_own_client(demo_raw):
    demo_raw["operator"] = {"sign_in": "client_credentials"}
    with pytest.raises(ParamsError, match="needs secret"):
        params.validate(demo_raw)
    demo_raw["operator"] = {
        "sign_in": "client_credentials",
        "secret": {"env": "OP_SECRET"},
        "client_id": "11111111-2222-3333-4444-555555555555",
    }
    assert params.validate(demo_raw).operator.secret.env == "OP_SECRET"


@pytest.mark.parametrize(
    "endpoints, field",
    [
        ({"graph_url": "http://graph.example"}, "endpoints.graph_url"),
        ({"proxy": "http://user:pw@proxy:8080"}, "endpoints.proxy"),
        ({"smtp_port": 70000}, "endpoints.smtp_port"),
    ],
)
def test_endpoint_overrides_are_checked(demo_raw, endpoints, field):
    demo_raw["endpoints"] = endpoints
    with pytest.raises(ParamsError) as caught:
        params.validate(demo_raw)
    assert field in caught.value.problems


def test_tenant_id_may_be_a_verified_domain(demo_raw):
    demo_raw["tenant_id"] = "contoso.onmicrosoft.com"
    assert params.validate(demo_raw).tenant_id == "contoso.onmicrosoft.com"


def test_unreadable_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenant: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        params.load(bad)
    with pytest.raises(ParamsError, match="does not exist"):
        params.load(tmp_path / "missing.yaml")
    bad.write_text("- a list")
    with pytest.raises(ParamsError, match="must be a mapping"):
        params.load(bad)


def test_a_proxy_password_is_never_echoed(demo_raw):
    demo_raw["endpoints"] = {"proxy": "ftp://alice:Pa55w0rd@proxy.example:8080"}
    with pytest.raises(ParamsError) as caught:
        params.validate(demo_raw)
    assert "credentials" in caught.value.problems["endpoints.proxy"] and "Pa55w0rd" not in str(caught.value)


@pytest.mark.parametrize(
    "where, tail",
    [
        (("tenant_id",), ""),
        (("webex", "email_id"), ""),
        (("webex", "callback_url"), ""),
        (("webex", "forwarding_address"), ""),
        (("webex", "forwarding_address"), "@example.com"),
        (("endpoints", "graph_url"), ""),
        (("endpoints", "proxy"), ""),
    ],
)
def test_a_huge_value_is_echoed_only_in_part(demo_raw, where, tail):
    target = demo_raw
    for key in where[:-1]:
        target = target.setdefault(key, {})
    target[where[-1]] = "x" * 10_000_000 + tail
    with pytest.raises(ParamsError) as caught:
        params.validate(demo_raw)
    why = caught.value.problems[".".join(where)]
    assert f"({10_000_000 + len(tail)} characters)" in why and why.count("x") < 250
    assert len(str(caught.value)) < 1000


def test_a_huge_unknown_key_is_named_only_in_part(demo_raw):
    demo_raw["k" * 1_000_000] = 1
    with pytest.raises(ParamsError) as caught:
        params.validate(demo_raw)
    assert len(str(caught.value)) < 1000 and "(1000000 characters)" in str(caught.value)


def test_steps_must_name_each_step_once(demo_raw):
    demo_raw["steps"] = []
    with pytest.raises(ParamsError) as caught:
        params.validate(demo_raw)
    assert "must name at least one step" in caught.value.problems["steps"]
    demo_raw["steps"] = ["01_webex_connect_app", "05_verify", "01_webex_connect_app"]
    with pytest.raises(ParamsError) as caught:
        params.validate(demo_raw)
    assert caught.value.problems["steps"].startswith("names 01_webex_connect_app more than once")


def test_a_repeated_key_in_a_file_is_refused(tmp_path):
    path = tmp_path / "tenant.yaml"
    path.write_text(DEMO.read_text().replace("apply: true", "apply: false\napply: true"))
    with pytest.raises(ParamsError, match=r"key apply appears twice \(lines 6 and 7\)"):
        params.load(path)
