"""agentforge_site.management.AgentForgeCommand: --org and --database mean the same in every command."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from agentforge_core.tenancy import org_scope

pytestmark = pytest.mark.django_db


def test_org_by_legacy_id_is_the_same_chain_as_by_uuid(make_org):
    from agentforge_agents.models import Agent

    org = make_org(legacy_id="org_acme")
    with org_scope(org):
        Agent.objects.create(name="audited")  # the chain: the organization, then the agent
    by_uuid, by_legacy = io.StringIO(), io.StringIO()
    call_command("verify_audit_log", "--org", str(org.pk), stdout=by_uuid)
    call_command("verify_audit_log", "--org", "org_acme", stdout=by_legacy)
    assert by_legacy.getvalue() == by_uuid.getvalue()
    assert f"{org.pk}: OK (2 entries)" in by_uuid.getvalue()


@pytest.mark.parametrize(
    "command", ["verify_audit_log", "checkpoint_audit_log", "rechain_audit_log", "rebuild_vector_index"]
)
def test_an_unknown_org_is_one_line_naming_the_option(command):
    with pytest.raises(CommandError) as caught:
        call_command(command, "--org", "org_nowhere", stdout=io.StringIO())
    assert str(caught.value) == "--org org_nowhere: no organization with id 'org_nowhere'"


def test_the_system_chain_is_accepted_where_the_audit_log_has_one():
    out = io.StringIO()
    call_command("verify_audit_log", "--org", "system", stdout=out)
    assert "system: OK (0 entries)" in out.getvalue()


@pytest.mark.parametrize("command", ["verify_audit_log", "rotate_encryption_key", "dbhealth", "backup"])
def test_an_unknown_database_alias_is_one_line(command):
    with pytest.raises(CommandError, match=r"^--database elsewhere: no such database alias \(known: default"):
        call_command(command, "--database", "elsewhere", stdout=io.StringIO())


@pytest.mark.parametrize(
    "command", ["verify_audit_log", "checkpoint_audit_log", "rechain_audit_log", "rebuild_vector_index"]
)
def test_a_uuid_of_no_organization_is_refused_not_done(command):
    """A typo in a UUID must not read as success ("OK (0 entries)", "0 rebuilt")."""
    missing = "5f0c1d2e-0000-4000-8000-00000000abcd"
    with pytest.raises(CommandError) as caught:
        call_command(command, "--org", missing, stdout=io.StringIO())
    assert str(caught.value) == f"--org {missing}: no organization with this id"


def test_the_audit_chain_of_a_deleted_organization_can_still_be_verified():
    """Its entries outlive the organization: the audit commands accept the id while its chain exists."""
    from security.models import AuditChainHead

    gone = "5f0c1d2e-0000-4000-8000-00000000dead"
    AuditChainHead.objects.create(chain_key=gone)
    out = io.StringIO()
    call_command("verify_audit_log", "--org", gone, stdout=out)
    assert f"{gone}: OK (0 entries)" in out.getvalue()
    with pytest.raises(CommandError, match="no organization with this id"):
        call_command("rebuild_vector_index", "--org", gone, stdout=io.StringIO())
