from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path
from echo import views as echo_views

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("echo", echo_views.echo, name="echo"),
    path("echo/page", echo_views.index, name="echo-page"),
    path("search/", include("search.urls")),
    path("chat/", include("chat.urls")),
    path("notifications/", include("notifications.urls")),
]

# The pages' script and style under any server, not only runserver (DEBUG only, as here).
urlpatterns += staticfiles_urlpatterns()
