"""The tenant's resources, one module each: how to read, diff and remove them.

Entra ID (application, service principal, consents, secrets), the Exchange mailbox and its admin API, the
PowerShell script writer, RBAC for Applications, SMTP AUTH, what blocks a mailbox, and the values sheet
typed into Webex Connect.
"""
