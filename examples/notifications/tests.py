"""The notifications example, tested in-process with django_websocket.testing (python manage.py test).

Each page's socket is detached: its view has returned (the request finished) while the socket
stays in the user's group and gets every notification sent to that user, and no other.
"""

import threading

from django.contrib.auth.models import User
from django.core.signals import request_finished
from django.test import Client, TestCase

from django_websocket.testing import WebSocketClient


class NotificationTests(TestCase):
    def setUp(self):
        self.ada = Client()
        self.ada.force_login(User.objects.create_user("ada"))
        self.bob = Client()
        self.bob.force_login(User.objects.create_user("bob"))

    def open_page(self, client):
        """The socket of ``client``'s page, once its view has returned (the socket detached)."""
        finished = threading.Event()

        def on_finished(sender, **kwargs):
            finished.set()

        request_finished.connect(on_finished)
        try:
            ws = WebSocketClient(client)
            self.assertEqual(ws.connect("/notifications/"), (True, None))
            self.assertTrue(finished.wait(5), "the view did not return")
        finally:
            request_finished.disconnect(on_finished)
        return ws

    def send(self, client, to, text):
        return client.post("/notifications/send/", {"to": to, "text": text})

    def test_a_notification_reaches_each_open_page_of_its_user_only(self):
        with self.open_page(self.ada) as tab1, self.open_page(self.ada) as tab2, self.open_page(self.bob) as bob:
            response = self.send(self.bob, "ada", "lunch?")
            self.assertEqual(response.json(), {"sent": "ada"})
            for tab in (tab1, tab2):
                notice = tab.receive_json()
                self.assertEqual((notice["type"], notice["text"], notice["from"]), ("notification", "lunch?", "bob"))
            self.assertTrue(bob.receive_nothing())

    def test_what_the_page_sends_is_ignored(self):
        with self.open_page(self.ada) as ws:
            ws.send("hello?")
            ws.send(b"\x00\x01")
            self.assertTrue(ws.receive_nothing())
            self.send(self.ada, "ada", "note to self")
            self.assertEqual(ws.receive_json()["text"], "note to self")  # still open, still in the group

    def test_anonymous_sockets_are_refused_and_sending_needs_a_login(self):
        ws = WebSocketClient()
        self.assertEqual(ws.connect("/notifications/"), (False, 403))
        self.assertEqual(self.client.post("/notifications/send/", {"to": "ada", "text": "hi"}).status_code, 403)

    def test_sending_checks_the_recipient_and_the_text(self):
        self.assertEqual(self.send(self.ada, "nobody", "hi").status_code, 404)
        self.assertEqual(self.send(self.ada, "bob", "   ").status_code, 400)
        self.assertEqual(self.ada.get("/notifications/send/").status_code, 405)
        with self.open_page(self.bob) as bob:
            self.send(self.ada, "bob", "x" * 300)
            self.assertEqual(bob.receive_json()["text"], "x" * 200)  # cut to MAX_LENGTH

    def test_pages(self):
        self.assertContains(self.client.get("/notifications/"), 'href="/notifications/login/"')
        page = self.ada.get("/notifications/")
        self.assertContains(page, "new DjangoWebSocket(")
        self.assertContains(page, "logged in as ada")
        self.assertContains(self.client.get("/"), 'href="/notifications/"')
