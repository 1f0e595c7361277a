"""The test project's wsgi.py for gevent-websocket's handler, as its deployment guide says."""

import os

from django_websocket.servers.geventwebsocket import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
application = get_wsgi_application()
