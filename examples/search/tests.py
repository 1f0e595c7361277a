"""The live search example, tested in-process with django_websocket.testing (python manage.py test)."""

from django.db.models import Q
from django.test import TestCase, override_settings

from django_websocket.testing import WebSocketClient

from .models import Entry


class LiveSearchTests(TestCase):
    def connect(self):
        ws = WebSocketClient(self.client)
        self.addCleanup(ws.close)
        self.assertEqual(ws.connect("/search/"), (True, None))
        return ws

    def test_query_is_answered_with_the_ten_best_matches(self):
        ws = self.connect()
        ws.send("django")
        answer = ws.receive_json()
        self.assertEqual(answer["query"], "django")
        self.assertEqual(len(answer["results"]), 10)
        self.assertEqual(answer["results"][0]["title"], "Django")  # a title starting with the query first
        in_title_or_summary = Q(title__icontains="django") | Q(summary__icontains="django")
        self.assertEqual(answer["total"], Entry.objects.filter(in_title_or_summary).count())

    @override_settings(LIVE_SEARCH_INTERVAL=60)
    def test_an_added_entry_is_pushed_at_once(self):
        ws = self.connect()
        ws.send("zebra")
        self.assertEqual(ws.receive_json()["total"], 0)
        # The form's request runs in the test's transaction: run its on_commit hooks as a commit would.
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post("/search/add", {"title": "zebra-tools", "summary": "Stripes."})
        self.assertRedirects(response, "/search/add")
        answer = ws.receive_json(timeout=3)
        self.assertEqual([entry["title"] for entry in answer["results"]], ["zebra-tools"])

    @override_settings(LIVE_SEARCH_INTERVAL=0.2)
    def test_results_are_pushed_again_every_interval(self):
        ws = self.connect()
        ws.send("redis")
        first, second = ws.receive_json(), ws.receive_json(timeout=2)
        self.assertEqual(first["results"], second["results"])
        self.assertGreater(second["at"], first["at"])

    @override_settings(LIVE_SEARCH_INTERVAL=60)
    def test_nothing_is_pushed_before_the_interval(self):
        ws = self.connect()
        ws.send("redis")
        ws.receive_json()
        self.assertTrue(ws.receive_nothing(timeout=0.8))

    def test_a_new_query_replaces_the_old_one(self):
        ws = self.connect()
        ws.send("redis")
        self.assertEqual(ws.receive_json()["query"], "redis")
        ws.send("")
        answer = ws.receive_json()
        self.assertEqual(answer["total"], Entry.objects.count())  # an empty query lists everything, newest first
        self.assertEqual(answer["results"][0]["title"], Entry.objects.first().title)

    def test_pages(self):
        self.assertContains(self.client.get("/search/"), "every 30 seconds")
        response = self.client.post("/search/add", {"title": "", "summary": "no title"})
        self.assertContains(response, "This field is required.")
