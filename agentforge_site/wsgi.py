import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentforge_site.settings")
application = get_wsgi_application()

# Measure the configured hashers now (about a second), not inside the first failed sign-in,
# whose extra time would stand out (accounts.hashers.failure_work).
from accounts.hashers import failure_work  # noqa: E402

failure_work()
