from accounts.models.directory import (  # noqa: F401
    Department,
    Group,
    GroupMembership,
    GroupRole,
    Permission,
    Role,
    RolePermission,
)
from accounts.models.organizations import AuthProvider, Organization  # noqa: F401
from accounts.models.sessions import HashedSession  # noqa: F401
from accounts.models.users import (  # noqa: F401
    MFASettings,
    PasswordHistory,
    User,
    UserManager,
    UserQuerySet,
    UserRole,
    UserSession,
    normalize_email_address,
)
