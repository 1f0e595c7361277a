"""This app on an ASGI server (benchmarks/compare.py): the project's asgi.py as the guides write it.

``/echo`` is the regular view of benchmarks/compare_urls.py (a thread of its own per connection,
``ASGIWebSocket``), ``/aecho`` the same loop as an ``async def`` view (on the event loop,
``AsyncWebSocket``). The peers on the same servers: Channels' consumers
(benchmarks/compare_asgi.py) and a bare ASGI echo with no Django (compliance/asgi_echo.py).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.compare_settings")

from django_websocket.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
