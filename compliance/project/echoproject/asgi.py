"""The echo project's ASGI application, as the ASGI deployment guides write asgi.py."""

import os
import sys
from pathlib import Path

here = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(here), str(here.parent.parent)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "echoproject.settings")

from django_websocket.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
