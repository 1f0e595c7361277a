from django.contrib.auth.views import LoginView, LogoutView
from django.urls import path

from . import views

app_name = "notifications"
urlpatterns = [
    path("", views.page, name="page"),
    path("send/", views.send, name="send"),
    path("login/", LoginView.as_view(template_name="notifications/login.html"), name="login"),
    path("logout/", LogoutView.as_view(next_page="notifications:page"), name="logout"),
]
