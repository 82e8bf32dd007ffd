import os
import threading

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentforge_site.settings")
application = get_wsgi_application()

# Measure the configured hashers now, beside start-up rather than inside the first failed
# sign-in, whose extra second would stand out (accounts.hashers.failure_work; CPU time, so
# requests served meanwhile do not skew it).
from accounts.hashers import failure_work  # noqa: E402

threading.Thread(target=failure_work, name="measure-hashers", daemon=True).start()
