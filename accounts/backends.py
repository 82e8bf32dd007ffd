"""Sign-in by email. An email is unique per organization, so several accounts may match."""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend

from accounts.models import User


class EmailBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, email=None, org=None, **kwargs):
        email = email or username or kwargs.get(User.USERNAME_FIELD)
        if not email or password is None:
            return None
        candidates = User.all_orgs.by_email(email).select_related("org")
        if org is not None:
            candidates = candidates.for_org(org)
        candidates = list(candidates)
        if not candidates:
            # Spend the same time as a real check, so response times do not reveal emails.
            User().set_password(password)
            return None
        for user in candidates:
            if user.check_password(password) and self.user_can_authenticate(user):
                return user
        return None

    def user_can_authenticate(self, user):
        return super().user_can_authenticate(user) and not user.is_locked

    def get_user(self, user_id):
        user = User.all_orgs.filter(pk=user_id).first()
        return user if user is not None and self.user_can_authenticate(user) else None
