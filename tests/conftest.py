import itertools

import pytest
from django.conf import settings

_counter = itertools.count(1)


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = item.get_closest_marker("backends")
        if marker and settings.DB_TYPE not in marker.args:
            item.add_marker(pytest.mark.skip(reason=f"runs on {', '.join(marker.args)} only (DB_TYPE={settings.DB_TYPE})"))


@pytest.fixture
def make_org(db):
    """Create an organization: make_org("Acme")."""
    from accounts.models import Organization

    def make(name=None, **fields):
        n = next(_counter)
        name = name or f"Org {n}"
        return Organization.all_orgs.create(name=name, slug=fields.pop("slug", f"org-{n}"), **fields)

    return make


@pytest.fixture
def make_user(db):
    """Create a user in an organization; password=None gives an unusable one (fast)."""
    from accounts.models import User

    def make(org, email=None, password=None, **fields):
        email = email or f"user{next(_counter)}@example.com"
        return User.all_orgs.create_user(email=email, password=password, org=org, **fields)

    return make
