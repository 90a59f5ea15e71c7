"""The Exchange Online PowerShell script of step 3: the documented way to apply the mailbox settings.

Every section reads before it writes, so the script is safe to run twice; a section whose setting the
kit found already as desired is left out. Values are single-quoted, with every quote character
PowerShell accepts as one (including the typographic ones) doubled.
"""

from __future__ import annotations

from dataclasses import dataclass

from .rbac import ROLE, SECTION, Target

#: the Exchange role of ``application.mail_send: scoped`` (:mod:`runbook_lib.tenant.rbac`), and its section here

#: PowerShell treats all of these as single quotes inside a single-quoted string
QUOTES = ("'", "\u2018", "\u2019", "\u201a", "\u201b")


def quote(value: str) -> str:
    """A PowerShell single-quoted string literal for ``value``."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("control characters cannot be put in the script")
    for mark in QUOTES:
        value = value.replace(mark, mark * 2)
    return f"'{value}'"


def boolean(value: bool) -> str:
    return "$true" if value else "$false"


@dataclass(frozen=True)
class Settings:
    mailbox: str
    forwarding_address: str
    keep_copy: bool
    policy: str
    use_default_policy: bool


HEADER = """\
# Webex Connect Email app, step 3: the Office 365 mailbox {mailbox}
# Tenant {tenant}. Written by the runbook kit {version} on {date}.
# Safe to run more than once: every setting is read first and changed only when it differs.
# Run it in PowerShell 7 with the ExchangeOnlineManagement module, as an Exchange administrator.
#Requires -Modules ExchangeOnlineManagement
$ErrorActionPreference = 'Stop'
Connect-ExchangeOnline -ShowBanner:$false
$mailbox = {q_mailbox}

# 0. What Graph cannot tell: is this an Exchange Online mailbox, and of which kind? An on-premises or
#    unlicensed mailbox is not found here; a shared mailbox needs a licensed user to sign in for it.
$found = Get-EXOMailbox -Identity $mailbox -ErrorAction SilentlyContinue
if (-not $found) {{
    throw "Exchange Online has no mailbox $mailbox (on-premises, or no Exchange Online licence): nothing changed"
}}
if ($found.RecipientTypeDetails -eq 'SharedMailbox') {{
    Write-Warning ("$mailbox is a shared mailbox: in Webex Connect give the form's Login ID field " +
                   "a licensed user with Send As on it")
}}
"""

SMTP_AUTH = """
# 1. Authenticated SMTP for this mailbox. Webex Connect sends through SMTP with OAuth (XOAUTH2), which
#    needs SMTP AUTH on. The mailbox setting wins over the tenant-wide one; security defaults still block it.
$cas = Get-CASMailbox -Identity $mailbox
if ($cas.SmtpClientAuthenticationDisabled -ne $false) {{
    Set-CASMailbox -Identity $mailbox -SmtpClientAuthenticationDisabled $false
    Write-Host "Authenticated SMTP enabled for $mailbox"
}} else {{
    Write-Host "Authenticated SMTP was already enabled for $mailbox"
}}
"""

FORWARDING = """
# 2. Forward every message to Webex Connect's forwarding address: this is how Webex Connect receives email.
#    Keep a copy in the mailbox: {keep}.
$forward = {q_forward}
$box = Get-Mailbox -Identity $mailbox
if ($box.ForwardingSmtpAddress -ne $forward -or $box.DeliverToMailboxAndForward -ne {keep}) {{
    if ($box.ForwardingSmtpAddress -and $box.ForwardingSmtpAddress -ne $forward) {{
        Write-Host "Replacing forwarding to $($box.ForwardingSmtpAddress)"
    }}
    Set-Mailbox -Identity $mailbox -ForwardingSmtpAddress $forward -DeliverToMailboxAndForward {keep}
    Write-Host "Forwarding set to $forward"
}} else {{
    Write-Host "Forwarding was already set to $forward"
}}
"""

DEDICATED_POLICY = """
# 3. Allow automatic forwarding to an external address for this sender only: a dedicated outbound spam
#    policy with AutoForwardingMode On and a rule scoped to the mailbox. The Default policy is not touched.
$policy = {q_policy}
$existing = Get-HostedOutboundSpamFilterPolicy | Where-Object {{ $_.Name -eq $policy }}
if (-not $existing) {{
    New-HostedOutboundSpamFilterPolicy -Name $policy -AutoForwardingMode On | Out-Null
    Write-Host "Outbound spam policy $policy created"
}} elseif ($existing.AutoForwardingMode -ne 'On') {{
    Set-HostedOutboundSpamFilterPolicy -Identity $policy -AutoForwardingMode On
    Write-Host "Outbound spam policy $policy now allows forwarding"
}}
$rule = Get-HostedOutboundSpamFilterRule | Where-Object {{ $_.Name -eq $policy }}
if (-not $rule) {{
    New-HostedOutboundSpamFilterRule -Name $policy -HostedOutboundSpamFilterPolicy $policy -From $mailbox | Out-Null
    Write-Host "Outbound spam rule $policy created for $mailbox"
}} elseif (@($rule.From) -notcontains $mailbox) {{
    Set-HostedOutboundSpamFilterRule -Identity $policy -From (@($rule.From) + $mailbox)
    Write-Host "Outbound spam rule $policy now covers $mailbox"
}}
"""

DEFAULT_POLICY = """
# 3. Allow automatic forwarding to external addresses in the Default outbound spam policy, as the
#    parameters ask (mailbox.use_default_policy). This allows it for every sender in the tenant.
$default = Get-HostedOutboundSpamFilterPolicy -Identity Default
if ($default.AutoForwardingMode -ne 'On') {{
    Set-HostedOutboundSpamFilterPolicy -Identity Default -AutoForwardingMode On
    Write-Host "Default outbound spam policy now allows forwarding"
}}
"""

MAIL_SEND_SCOPE = """
# 4. Mail.Send for this mailbox only (application.mail_send: scoped): Exchange RBAC for Applications.
#    The application has no tenant-wide Mail.Send in Entra ID; Exchange lets it send as this mailbox alone.
#    Webex Connect itself sends with the mailbox's delegated SMTP.Send and needs none of this.
$appId = {q_app_id}
$spObjectId = {q_sp_object_id}
$scopeName = {q_scope}
$assignmentName = {q_assignment}
$role = {q_role}
$filter = "PrimarySmtpAddress -eq '$($found.PrimarySmtpAddress -replace "'", "''")'"
$pointer = Get-ServicePrincipal -Identity $appId -ErrorAction SilentlyContinue
if ($pointer -and $pointer.ObjectId -ne $spObjectId) {{
    Remove-ServicePrincipal -Identity $appId -Confirm:$false
    Write-Host "Removed Exchange's pointer to service principal $($pointer.ObjectId), not the application's"
    $pointer = $null
}}
if (-not $pointer) {{
    New-ServicePrincipal -AppId $appId -ObjectId $spObjectId -DisplayName {q_name} | Out-Null
    Write-Host "Exchange service principal created for $appId"
}}
$scope = Get-ManagementScope -Identity $scopeName -ErrorAction SilentlyContinue
if (-not $scope) {{
    New-ManagementScope -Name $scopeName -RecipientRestrictionFilter $filter | Out-Null
    Write-Host "Management scope $scopeName created"
}} elseif ($scope.RecipientFilter -ne $filter) {{
    Set-ManagementScope -Identity $scopeName -RecipientRestrictionFilter $filter
    Write-Host "Management scope $scopeName now matches $($found.PrimarySmtpAddress) only"
}}
$assignment = Get-ManagementRoleAssignment -Identity $assignmentName -ErrorAction SilentlyContinue
if ($assignment -and ($assignment.Role -ne $role -or $assignment.CustomResourceScope -ne $scopeName)) {{
    Remove-ManagementRoleAssignment -Identity $assignmentName -Confirm:$false
    Write-Host "Removed role assignment $assignmentName (its role or scope differed)"
    $assignment = $null
}}
if (-not $assignment) {{
    New-ManagementRoleAssignment -Name $assignmentName -App $spObjectId -Role $role `
        -CustomResourceScope $scopeName | Out-Null
    Write-Host "Role assignment $assignmentName created"
}}
#    Exchange's own test (it ignores Entra ID's grants): this mailbox must be in scope.
$test = Test-ServicePrincipalAuthorization -Identity $appId -Resource $mailbox |
    Where-Object {{ $_.RoleName -eq $role }}
if ($test.InScope -eq $true) {{
    Write-Host "Application Mail.Send applies to $mailbox (InScope True)"
}} else {{
    Write-Warning "Application Mail.Send does not apply to $mailbox yet: check the scope $scopeName"
}}
"""

MAIL_SEND_SCOPE_LATER = """
# 4. Mail.Send for this mailbox only (application.mail_send: scoped): the application does not exist
#    yet. Run step 2, then step 3 again: this section then creates Exchange's scope and role assignment.
"""

BLOCKERS = """
# {number}. Read only: what else can stop mail, which this script does not change.
$warnings = 0
if ((Get-TransportConfig).SmtpClientAuthenticationDisabled) {{
    Write-Host "SMTP AUTH is off tenant-wide; the mailbox's own setting (section 1) wins over it"
}}
#    The remote domain Exchange applies to the forwarding address (the most specific match) must allow
#    automatic forwarding.
$domain = ($forward -replace '^smtp:', '').Split('@')[-1]
$remote = Get-RemoteDomain | Where-Object {{
    $_.DomainName -eq $domain -or $_.DomainName -eq '*' -or
    ($_.DomainName.StartsWith('*.') -and $domain.EndsWith($_.DomainName.Substring(1)))
}} | Sort-Object {{ $_.DomainName.Length }} -Descending | Select-Object -First 1
if ($remote -and -not $remote.AutoForwardEnabled) {{
    Write-Warning "Remote domain $($remote.Identity) ($($remote.DomainName)) blocks automatic forwarding to $domain"
    $warnings++
}}
#    Enforced mail flow rules that redirect, reject, delete or quarantine mail may stop the forwarded copy.
Get-TransportRule | Where-Object {{
    $_.State -eq 'Enabled' -and $_.Mode -eq 'Enforce' -and
    ($_.RedirectMessageTo -or $_.RejectMessageReasonText -or $_.RejectMessageEnhancedStatusCode -or
     $_.DeleteMessage -or $_.Quarantine) -and
    (-not $_.From -or @($_.From) -contains $mailbox)
}} | ForEach-Object {{
    Write-Warning "Mail flow rule '$($_.Name)' may redirect, reject or delete forwarded mail: review it"
    $warnings++
}}
#    Outbound spam rules applied before this one (lower Priority) that cover the sender and do not allow
#    forwarding win over it.
$mine = Get-HostedOutboundSpamFilterRule | Where-Object {{ $_.Name -eq {q_rule} }}
Get-HostedOutboundSpamFilterRule | Where-Object {{
    $_.State -eq 'Enabled' -and $_.Name -ne {q_rule} -and (-not $mine -or $_.Priority -lt $mine.Priority) -and
    (@($_.From) -contains $mailbox -or @($_.SenderDomainIs) -contains $mailbox.Split('@')[-1] -or $_.FromMemberOf)
}} | ForEach-Object {{
    $mode = (Get-HostedOutboundSpamFilterPolicy -Identity $_.HostedOutboundSpamFilterPolicy).AutoForwardingMode
    if ($mode -ne 'On') {{
        Write-Warning "Outbound spam rule '$($_.Name)' (priority $($_.Priority), forwarding $mode) applies first"
        $warnings++
    }}
}}
Write-Host "Checks of what else can stop mail: $warnings warning(s)"
"""

UNCHANGED = """
# {number}. {what}: already as desired when the kit read it; nothing to do.
"""

FOOTER = """
Disconnect-ExchangeOnline -Confirm:$false
"""


def _mail_send_scope(target: Target) -> str:
    """Section 4 (``application.mail_send: scoped``): the RBAC for Applications objects, read before written."""
    if not (target.app_id and target.sp_object_id):
        return MAIL_SEND_SCOPE_LATER
    return MAIL_SEND_SCOPE.format(
        q_app_id=quote(target.app_id),
        q_sp_object_id=quote(target.sp_object_id),
        q_scope=quote(target.scope),
        q_assignment=quote(target.assignment),
        q_role=quote(ROLE),
        q_name=quote(target.display_name),
    )


def script(
    settings: Settings, *, tenant: str, version: str, date: str, sections: set[str], scoped: Target | None = None
) -> str:
    """The script applying ``sections`` (any of ``smtp_auth``, ``forwarding``, ``external_forwarding``, and
    ``mail_send_scope`` for ``scoped``, the RBAC for Applications target of ``application.mail_send: scoped``)."""
    keep = boolean(settings.keep_copy)
    parts = [
        HEADER.format(
            mailbox=settings.mailbox, tenant=tenant, version=version, date=date, q_mailbox=quote(settings.mailbox)
        )
    ]
    blocks = [
        ("smtp_auth", "Authenticated SMTP", SMTP_AUTH.format()),
        (
            "forwarding",
            "Forwarding to Webex Connect",
            FORWARDING.format(keep=keep, q_forward=quote("smtp:" + settings.forwarding_address)),
        ),
        (
            "external_forwarding",
            "External forwarding",
            (
                DEFAULT_POLICY.format()
                if settings.use_default_policy
                else DEDICATED_POLICY.format(q_policy=quote(settings.policy))
            ),
        ),
    ]
    if scoped is not None:
        blocks.append((SECTION, "Mail.Send for this mailbox only", _mail_send_scope(scoped)))
    for number, (key, what, text) in enumerate(blocks, start=1):
        parts.append(text if key in sections else UNCHANGED.format(number=number, what=what))
    if "forwarding" not in sections:  # the checks below need $forward, which section 2 sets
        parts.append(f"$forward = {quote('smtp:' + settings.forwarding_address)}\n")
    rule = quote("" if settings.use_default_policy else settings.policy)
    parts.append(BLOCKERS.format(number=len(blocks) + 1, q_rule=rule))
    parts.append(FOOTER)
    return "".join(parts)
