from django.urls import path

from operations import views

app_name = "operations"

urlpatterns: list = [
    path("health/", views.health, name="health"),
]
