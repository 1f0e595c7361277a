"""The echo project's WSGI application for gevent-websocket's handler and gunicorn worker."""

import os
import sys
from pathlib import Path

here = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(here), str(here.parent.parent)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "echoproject.settings")

from django_websocket.servers.geventwebsocket import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
