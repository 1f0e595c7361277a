"""The echo example, tested in-process with django_websocket.testing (python manage.py test)."""

from django.test import TestCase

from django_websocket.testing import WebSocketClient


class EchoTests(TestCase):
    def test_page(self):
        response = self.client.get("/echo/page")
        self.assertContains(response, "new DjangoWebSocket(")
        self.assertContains(response, "/static/django_websocket/websocket.js")

    def test_plain_http_to_the_socket_is_refused(self):
        response = self.client.get("/echo")
        self.assertContains(response, "This view accepts only WebSocket connections.", status_code=400)

    def test_every_message_comes_back(self):
        with WebSocketClient(self.client) as ws:
            self.assertEqual(ws.connect("/echo"), (True, None))
            ws.send("hello")
            self.assertEqual(ws.receive(), "hello")
            ws.send(b"\x00\x01")
            self.assertEqual(ws.receive(), b"\x00\x01")

    def test_index_links_the_examples(self):
        response = self.client.get("/")
        self.assertContains(response, 'href="/echo/page"')
        self.assertContains(response, 'href="/search/"')
