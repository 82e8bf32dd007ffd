"""No N+1 in the admin: every registered ModelAdmin's changelist and change page run the same
number of queries with 2 rows of every table as with 12."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.admin_support import populate

pytestmark = pytest.mark.django_db

REGISTERED = sorted(admin.site._registry, key=lambda model: model._meta.label)
SMALL, LARGE = 2, 12


def _one_round(i, make_org, make_user):
    """One more row of every registered model (a new organization, its member and rows)."""
    from django.contrib.auth.models import Group as AuthGroup

    from accounts.models import Permission
    from knowledge.models import VectorSet
    from settings_app.models import SystemSetting

    org = make_org(f"Round {i}")
    populate(org, make_user(org, email=f"member{i}@round.test"), suffix=f"-{i}")
    AuthGroup.objects.create(name=f"Operators {i}")
    Permission.objects.create(codename=f"reports{i}:read")
    SystemSetting.objects.create(key=f"feature.{i}", value=True)
    VectorSet.all_orgs.create(org=org, tool_key="", embedding_model=f"model-{i}", dimension=3)


def _count(client, url) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(captured.captured_queries), [q["sql"] for q in captured.captured_queries]


def _pages(model) -> dict[str, str]:
    obj = model._base_manager.order_by("pk").first()
    assert obj is not None, f"no {model._meta.label} row to open"
    info = (model._meta.app_label, model._meta.model_name)
    return {
        "changelist": reverse("admin:%s_%s_changelist" % info),
        "change": reverse("admin:%s_%s_change" % info, args=[obj.pk]),
    }


def test_changelist_and_change_page_queries_do_not_grow_with_rows(client, make_org, make_user):
    # One data set for every model (building it per model cost half a minute a backend):
    # every page counted with SMALL rounds of rows, then again with LARGE.
    root_org = make_org("Root")
    client.force_login(make_user(root_org, email="root@root.test", is_staff=True, is_superuser=True))
    for i in range(SMALL):
        _one_round(i, make_org, make_user)
    pages = {model: _pages(model) for model in REGISTERED}
    for urls in pages.values():
        for url in urls.values():
            client.get(url)  # warm per-process caches (content types, sessions)
    few = {(model, page): _count(client, url) for model, urls in pages.items() for page, url in urls.items()}
    for i in range(SMALL, LARGE):
        _one_round(i, make_org, make_user)
    grown = []
    for (model, page), (count, sqls) in few.items():
        assert model._base_manager.count() >= LARGE, model._meta.label
        many_count, many_sqls = _count(client, pages[model][page])
        if many_count != count:
            extra = [sql for sql in many_sqls if sql not in sqls]
            grown.append(f"{model._meta.label} {page}: {count} -> {many_count} queries, new: {extra[:3]}")
    assert len(few) == 2 * len(REGISTERED) >= 60
    assert grown == []
