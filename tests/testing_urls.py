"""The test project's URLs plus the views of tests/testing_views.py (ROOT_URLCONF in the tests of
django_websocket.testing, which leaves the shared tests/urls.py alone)."""

from django.urls import include, path

from . import testing_views

urlpatterns = [
    path("testing/whoami", testing_views.whoami),
    path("testing/remember", testing_views.remember),
    path("testing/recall", testing_views.recall),
    path("testing/users", testing_views.users),
    path("testing/stubborn", testing_views.stubborn),
    path("testing/slow", testing_views.slow_to_answer),
    path("testing/goodbye", testing_views.goodbye),
    path("testing/echo-page", testing_views.echo_page),
    path("testing/async/users", testing_views.async_users),
    path("testing/async/whoami", testing_views.async_whoami),
    path("testing/async/refuse", testing_views.async_refuse),
    path("testing/async/crash", testing_views.async_crash),
    path("testing/async/closer", testing_views.async_closer),
    path("", include("tests.urls")),
]
