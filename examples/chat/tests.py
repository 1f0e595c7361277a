"""The chat example, tested in-process with django_websocket.testing (python manage.py test).

Two clients in a room are two sockets of this process in one group (the in-memory backend).
"""

from django.contrib.auth.models import User
from django.test import Client, TestCase

from django_websocket.testing import WebSocketClient


class ChatTests(TestCase):
    def enter(self, room, client=None):
        """A socket in ``room`` for ``client`` (a test Client), once it has been welcomed."""
        client = client or Client()
        client.get(f"/chat/{room}/")  # the page: an anonymous user gets a name in the session
        ws = WebSocketClient(client)
        self.assertEqual(ws.connect(f"/chat/{room}/"), (True, None))
        welcome = ws.receive_json()
        self.assertEqual(welcome["type"], "welcome")
        ws.user = welcome["user"]
        return ws

    def test_pages(self):
        self.assertContains(self.client.get("/chat/"), 'href="/chat/lobby/"')
        self.assertRedirects(self.client.get("/chat/", {"room": "Tea Time"}), "/chat/tea-time/")
        page = self.client.get("/chat/lobby/")
        self.assertContains(page, "new DjangoWebSocket(")
        self.assertRegex(page.content.decode(), r"you are anonymous-\d{3}")

    def test_everyone_in_the_room_gets_every_message_and_the_notices(self):
        with self.enter("lobby") as alice:
            with self.enter("lobby") as bob:
                self.assertRegex(bob.user, r"^anonymous-\d{3}$")
                self.assertEqual(alice.receive_json(), {"type": "joined", "user": bob.user})
                bob.send("hello room")
                for ws in (alice, bob):
                    message = ws.receive_json()
                    self.assertEqual(
                        (message["type"], message["user"], message["text"]), ("message", bob.user, "hello room")
                    )
            self.assertEqual(alice.receive_json(), {"type": "left", "user": bob.user})

    def test_rooms_are_separate_and_blank_or_binary_messages_ignored(self):
        with self.enter("one") as one, self.enter("two") as two:
            two.send("   ")
            two.send(b"\x00")
            two.send("only for two")
            self.assertEqual(two.receive_json()["text"], "only for two")
            one.receive_nothing()

    def test_logged_in_users_chat_under_their_name(self):
        client = Client()
        client.force_login(User.objects.create_user("ada"))
        self.assertContains(client.get("/chat/lobby/"), "logged in as ada")
        with self.enter("lobby", client) as ws:
            self.assertEqual(ws.user, "ada")
            ws.send("x" * 600)
            self.assertEqual(ws.receive_json()["text"], "x" * 500)  # cut to MAX_LENGTH

    def test_who_is_in_the_room(self):
        self.assertEqual(self.client.get("/chat/quiet/members/").json(), {"members": []})
        client = Client()
        client.force_login(User.objects.create_user("grace"))
        with self.enter("quiet", client) as grace, self.enter("quiet") as other:
            self.assertEqual(self.client.get("/chat/quiet/members/").json(), {"members": ["grace", other.user]})
            self.assertEqual(grace.receive_json(), {"type": "joined", "user": other.user})
        # Both gone: each left the room before its socket closed.
        self.assertEqual(self.client.get("/chat/quiet/members/").json(), {"members": []})
