"""/health/: platform details for superusers only; an organization's admin sees its own figures."""

from __future__ import annotations

import pytest

from operations.health import PUBLIC_KEYS

PLATFORM_WORDS = ("server_version", "tables", "slow_query", "replicas", "connect_ms", "pool")


def platform_details_in(body: dict) -> list[str]:
    text = str(body)
    return [word for word in PLATFORM_WORDS if word in text]


@pytest.mark.django_db
def test_superuser_gets_the_platform_details(client, make_org, make_user):
    client.force_login(make_user(make_org(), is_staff=True, is_superuser=True))
    body = client.get("/health/").json()
    assert body["checks"]["database"]["server_version"]
    assert isinstance(body["checks"]["tables"], list) and body["checks"]["tables"]
    assert "slow_queries" in body["checks"]["queries"]
    assert "organization" not in body


@pytest.mark.django_db
def test_organization_admin_sees_its_own_figures_and_nothing_of_the_platform(client, make_org, make_user):
    from agentforge_agents.models import Agent

    mine, theirs = make_org(), make_org()
    admin = make_user(mine, is_staff=True, has_admin_access=True)
    make_user(mine)
    for _ in range(3):
        make_user(theirs)
    Agent.all_orgs.create(org=theirs, name="Their agent")
    client.force_login(admin)
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {*PUBLIC_KEYS, "organization"}
    assert body["organization"] == {"id": str(mine.pk), "users": 2, "agents": 0, "conversations": 0, "documents": 0}
    assert platform_details_in(body) == []


@pytest.mark.django_db
def test_anonymous_gets_the_status_only(client):
    body = client.get("/health/").json()
    assert set(body) == set(PUBLIC_KEYS)
    assert platform_details_in(body) == []


@pytest.mark.django_db
def test_an_inactive_superuser_session_gets_the_status_only(client, make_org, make_user):
    from accounts.models import User

    root = make_user(make_org(), is_staff=True, is_superuser=True)
    client.force_login(root)
    User.all_orgs.filter(pk=root.pk).update(status=User.Status.SUSPENDED)
    assert set(client.get("/health/").json()) == set(PUBLIC_KEYS)
