"""Organization admins see and edit only their organization's rows on every admin page."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from tests.admin_support import admin_world, form_data, request_scope

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_org, make_user):
    return admin_world(make_org, make_user)


def test_other_orgs_object_urls_are_404(client, world):
    client.force_login(world["orgadmin"])
    theirs = world["theirs"]
    for app, model, key in [
        ("agents", "agent", "agent"),
        ("agents", "tool", "tool"),
        ("accounts", "user", "user"),
        ("accounts", "role", "role"),
        ("security", "apikey", "apikey"),
        ("settings_app", "orgsetting", "orgsetting"),
        ("accounts", "organization", "org"),
    ]:
        pk = theirs[key].pk
        for view in ("change", "delete", "history"):
            response = client.get(reverse(f"admin:{app}_{model}_{view}", args=[pk]))
            assert response.status_code == 404, (model, view, response.status_code)
        response = client.post(reverse(f"admin:{app}_{model}_change", args=[pk]), {"name": "hijacked"})
        assert response.status_code == 404
    assert client.get(reverse("admin:auth_user_password_change", args=[theirs["user"].pk])).status_code == 404


def test_fk_choices_list_own_org_only(client, world):
    client.force_login(world["orgadmin"])
    response = client.get(reverse("admin:agents_agent_add"))
    form = response.context["adminform"].form
    assert "org" not in form.fields  # org admins never pick the organization
    with request_scope(response):
        owners = {str(u.pk) for u in form.fields["owner"].queryset}
    assert str(world["mine"]["user"].pk) in owners
    assert str(world["theirs"]["user"].pk) not in owners
    html = response.content.decode()
    assert "member@globex.test" not in html
    # Inline foreign keys too.
    with request_scope(response):
        inline_form = response.context["inline_admin_formsets"][0].formset.empty_form
        tools = {str(t.pk) for t in inline_form.fields["tool"].queryset}
    assert tools == {str(world["mine"]["tool"].pk)}


def test_m2m_choices_list_own_org_only(client, world):
    client.force_login(world["orgadmin"])
    response = client.get(reverse("admin:accounts_group_add"))
    form = response.context["adminform"].form
    with request_scope(response):
        assert {r.pk for r in form.fields["roles"].queryset} == {world["mine"]["role"].pk}
    response = client.get(reverse("admin:accounts_user_change", args=[world["mine"]["user"].pk]))
    form = response.context["adminform"].form
    with request_scope(response):
        assert {r.pk for r in form.fields["roles"].queryset} == {world["mine"]["role"].pk}
    # Admin-console permissions are superuser business.
    assert "user_permissions" not in form.fields and "groups" not in form.fields
    assert "is_superuser" not in form.fields


def test_autocomplete_is_scoped(client, world):
    client.force_login(world["orgadmin"])
    url = reverse("admin:autocomplete")
    params = {"app_label": "agents", "model_name": "agent", "field_name": "owner", "term": "member"}
    results = json.loads(client.get(url, params).content)["results"]
    assert [r["text"] for r in results] == ["member@acme.test"]
    client.force_login(world["superuser"])
    results = json.loads(client.get(url, params).content)["results"]
    assert {r["text"] for r in results} == {"member@acme.test", "member@globex.test"}


def test_list_filters_are_scoped(client, world):
    client.force_login(world["orgadmin"])
    response = client.get(reverse("admin:knowledge_document_changelist"))
    html = response.content.decode()
    assert "Mailer-g" not in html  # the other org's tool is not a filter choice
    assert "Mailer" in html
    assert "?org=" not in html
    client.force_login(world["superuser"])
    html = client.get(reverse("admin:knowledge_document_changelist")).content.decode()
    assert "Mailer-g" in html and "?org=" in html


def test_filtering_by_another_orgs_id_shows_nothing(client, world):
    client.force_login(world["orgadmin"])
    response = client.get(reverse("admin:agents_agent_changelist"), {"org": str(world["other"].pk)})
    # The lookup is applied inside the admin's own organization: nothing matches both.
    assert response.status_code == 200
    with request_scope(response):
        assert list(response.context["cl"].result_list) == []
    assert world["theirs"]["agent"].name not in response.content.decode()


def test_org_admin_add_fills_org(client, world):
    from agentforge_agents.models import Agent

    client.force_login(world["orgadmin"])
    data = form_data(client.get(reverse("admin:agents_agent_add")))
    data.update({"name": "New agent", "owner": str(world["mine"]["user"].pk)})
    response = client.post(reverse("admin:agents_agent_add"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    agent = Agent.all_orgs.get(name="New agent")
    assert agent.org_id == world["org"].pk


def test_org_admin_cannot_pick_other_orgs_rows_by_id(client, world):
    from agentforge_agents.models import Agent

    client.force_login(world["orgadmin"])
    data = form_data(client.get(reverse("admin:agents_agent_add")))
    data.update({"name": "Sneaky", "owner": str(world["theirs"]["user"].pk)})
    response = client.post(reverse("admin:agents_agent_add"), data)
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Agent.all_orgs.filter(name="Sneaky").exists()


def test_superuser_cannot_mix_organizations(client, world):
    from agentforge_agents.models import Agent

    client.force_login(world["superuser"])
    data = form_data(client.get(reverse("admin:agents_agent_add")))
    data.update({"name": "Mixed", "org": str(world["org"].pk), "owner": str(world["theirs"]["user"].pk)})
    response = client.post(reverse("admin:agents_agent_add"), data)
    assert response.status_code == 200
    assert "belongs to another organization" in response.content.decode()
    assert not Agent.all_orgs.filter(name="Mixed").exists()


def test_superuser_edits_another_orgs_row(client, world):
    from agentforge_agents.models import Agent

    client.force_login(world["superuser"])
    agent = world["theirs"]["agent"]
    url = reverse("admin:agents_agent_change", args=[agent.pk])
    page = client.get(url)
    # The inline shows the other organization's rows although the superuser belongs to Acme.
    with request_scope(page):
        assert len(page.context["inline_admin_formsets"][0].formset.forms) == 1
    data = form_data(page)
    data["name"] = "Renamed by root"
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    agent = Agent.all_orgs.get(pk=agent.pk)
    assert agent.name == "Renamed by root" and agent.org_id == world["other"].pk


def test_org_admin_cannot_touch_a_superuser(client, world):
    client.force_login(world["orgadmin"])
    root = world["superuser"]
    page = client.get(reverse("admin:accounts_user_change", args=[root.pk]))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()  # view only
    assert (
        client.post(reverse("admin:accounts_user_change", args=[root.pk]), {"email": "x@acme.test"}).status_code == 403
    )
    assert client.get(reverse("admin:auth_user_password_change", args=[root.pk])).status_code == 403


def test_org_admin_cannot_grant_superuser(client, world):
    from accounts.models import User

    client.force_login(world["orgadmin"])
    member = world["mine"]["user"]
    url = reverse("admin:accounts_user_change", args=[member.pk])
    data = form_data(client.get(url))
    data["is_superuser"] = "on"
    assert client.post(url, data).status_code == 302
    assert User.all_orgs.get(pk=member.pk).is_superuser is False


def test_org_admin_sees_only_own_org_and_cannot_add_orgs(client, world):
    client.force_login(world["orgadmin"])
    response = client.get(reverse("admin:accounts_organization_changelist"))
    with request_scope(response):
        assert [o.pk for o in response.context["cl"].result_list] == [world["org"].pk]
    assert client.get(reverse("admin:accounts_organization_add")).status_code == 403
    page = client.get(reverse("admin:accounts_organization_change", args=[world["org"].pk]))
    form = page.context["adminform"].form
    assert "max_users" not in form.fields and "status" not in form.fields  # platform limits


def test_system_settings_are_superuser_only(client, world):
    client.force_login(world["orgadmin"])
    assert client.get(reverse("admin:settings_app_systemsetting_changelist")).status_code == 403
    assert "System settings" not in client.get(reverse("admin:index")).content.decode()
