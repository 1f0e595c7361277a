# django-websocket, first in INSTALLED_APPS: its runserver, which can hand a connection over to
# a WebSocket view, then takes the place of the one of django.contrib.staticfiles.
INSTALLED_APPS.insert(0, "django_websocket")
