"""The wire: how the kit reaches a tenant, live, recorded or simulated.

Transports (live, record, replay, sandbox), what recordings scrub, the Graph/Exchange REST client with its
bounded retries, sign-in through msal, and the loopback SMTP server replays use.
"""
