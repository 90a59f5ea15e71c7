"""Step 5's SMTP check: STARTTLS to the submission host, EHLO must offer AUTH XOAUTH2, and with a
delegated token for the mailbox, AUTH XOAUTH2 must succeed. This is the same conversation Webex Connect
has with Exchange Online when it sends.

Where the connection goes is the transport's decision (the real host, or in replay a local server
answering as recorded); this code is the same in every mode.
"""

from __future__ import annotations

import base64
import smtplib
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..context.step import Step

TIMEOUT = 30


def xoauth2(user: str, token: str) -> str:
    """The SASL XOAUTH2 initial response: base64 of ``user=...^Aauth=Bearer ...^A^A``."""
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode("ascii")


def _features(smtp: smtplib.SMTP) -> list[str]:
    return [line.strip() for line in (smtp.ehlo_resp or b"").decode("utf-8", "replace").splitlines()[1:]]


def test_message(step: Step, to: str) -> EmailMessage:
    """A short plain message from the mailbox, saying what it is, so its recipient knows it can be deleted."""
    message = EmailMessage()
    message["From"] = step.params.webex.email_id
    message["To"] = to
    message["Subject"] = f"Webex Connect email app: test message for {step.params.tenant}"
    message.set_content(
        f"The runbook kit sent this from {step.params.webex.email_id} through {step.endpoints.smtp_host} with "
        "OAuth 2.0 (AUTH XOAUTH2), as Webex Connect will. It needs no answer and can be deleted.\n"
    )
    return message


def _send(client: smtplib.SMTP, message: EmailMessage) -> dict[str, Any]:
    """Submit ``message`` command by command, keeping Exchange's own answer: accepted (with its queue id),
    or the first refusal with its code."""
    to = str(message["To"])
    for command, args in (("mail", (str(message["From"]),)), ("rcpt", (to,)), ("data", (message.as_bytes(),))):
        try:
            code, reply = getattr(client, command)(*args)
        except smtplib.SMTPResponseException as error:  # DATA not answered 354
            code, reply = error.smtp_code, error.smtp_error
        if code >= 400 or command == "data":
            break
    if code >= 400:
        client.rset()
    return {"to": to, "code": code, "message": reply.decode("utf-8", "replace")}


def probe(step: Step, token: str | None = None, send_to: str | None = None) -> dict[str, Any]:
    """Talk to the SMTP submission host and return what it said (no token is kept); with ``send_to`` and a
    successful AUTH, submit one test message to that address."""
    e = step.endpoints
    target = step.transport.smtp_target(e.smtp_host, e.smtp_port)
    transcript: dict[str, Any] = {"host": e.smtp_host, "port": e.smtp_port}
    with smtplib.SMTP(target.host, target.port, timeout=TIMEOUT, local_hostname="runbook-kit") as client:
        client.ehlo()
        transcript["features_plain"] = _features(client)
        code, reply = client.starttls(context=target.context)
        transcript["starttls"] = f"{code} {reply.decode('utf-8', 'replace')}"
        client.ehlo()
        transcript["features_tls"] = _features(client)
        transcript["server"] = (client.ehlo_resp or b"").decode("utf-8", "replace").splitlines()[0].strip()
        transcript["auth"] = None
        if token:
            code, reply = client.docmd("AUTH", "XOAUTH2 " + xoauth2(step.params.webex.email_id, token))
            if code == 334:  # the server's error challenge: answer empty to get the final reply
                code, reply = client.docmd("")
            transcript["auth"] = {"code": code, "message": reply.decode("utf-8", "replace")}
            if code == 235 and send_to:
                transcript["sent"] = _send(client, test_message(step, send_to))
    step.transport.smtp_done(transcript)
    return transcript


def offers_xoauth2(features: list[str]) -> bool:
    return any(f.upper().startswith("AUTH") and "XOAUTH2" in f.upper().split() for f in features)
