from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("operations.urls")),
]

# 503 (with Retry-After) when the database is down, 500 otherwise; both name the request id.
handler500 = "operations.requestlog.server_error"
