"""The benchmark project's WSGI application, for gunicorn (benchmarks/compare.py)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.compare_settings")
application = get_wsgi_application()
