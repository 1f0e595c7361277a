"""The test project's wsgi.py, as ``django-admin startproject`` writes it (gunicorn loads it)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
application = get_wsgi_application()
