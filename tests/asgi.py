"""The test project's asgi.py, as the ASGI deployment guides write it (the ASGI servers load it)."""

import os

from django_websocket.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
application = get_asgi_application()
