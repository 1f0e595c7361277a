from django.contrib.auth.views import LoginView, LogoutView
from django.urls import path

from . import views

app_name = "chat"
urlpatterns = [
    path("", views.index, name="index"),
    path("login/", LoginView.as_view(template_name="chat/login.html"), name="login"),
    path("logout/", LogoutView.as_view(next_page="chat:index"), name="logout"),
    path("<slug:room>/", views.room, name="room"),
    path("<slug:room>/members/", views.members, name="members"),
]
