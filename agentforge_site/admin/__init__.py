"""The AgentForge admin console's building blocks (import them from their modules).

* :mod:`.site` - the admin site: titles, the second-factor step.
* :mod:`.scoping` - :class:`~.scoping.OrgScopedAdmin` and its inlines, filters and form checks:
  every page of a tenant model sees only the staff user's organization.
* :mod:`.mixins` - small model-admin behaviours (read-only, superuser writes, secret fields).
* :mod:`.display` - how values are shown in lists and pages.
"""
