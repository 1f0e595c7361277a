from django.urls import path
from echo import views as echo_views

urlpatterns = [
    path("", echo_views.index, name="index"),
    path("echo", echo_views.echo, name="echo"),
]
