"""A bare ASGI echo application: no Django, no django_websocket, nothing but the ASGI events.

It tells what an ASGI server's own framing and handshake handling do, apart from anything our
bridge does: the Autobahn counts of ``compliance/bare_asgi.py`` and the checks of
``tests/test_asgi_servers.py`` run it on each ASGI server, beside the same run through our app.

    uvicorn compliance.asgi_echo:app --port 9001      (from the repository's root)

Every WebSocket path echoes each message with its type (text as text, binary as binary) until
the client leaves. ``/scope`` first sends one text message, the JSON of what the server put in
the scope (its ``extensions`` and the offered ``subprotocols``), then echoes. A query string
``?subprotocol=NAME`` accepts with that subprotocol. ``/close?code=N&reason=R`` sends ``bye``
and closes with that code and reason; a server that refuses the close event (its ``send()``
raises) gets the text message ``refused: <the error>`` back instead, and the connection is left
to the server. Plain HTTP gets ``200 bare asgi echo``.
Each ``websocket.disconnect`` event is printed on standard output, with the path and query
string of its connection, as JSON. Lifespan events are
answered; on ``lifespan.shutdown`` the application closes nothing (it keeps
no list of connections), so what clients get on a server's shutdown is the server's own doing.

Standard library only: the Autobahn harness loads it in the server's environment.
"""

import json
from urllib.parse import parse_qs


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
    elif scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"bare asgi echo"})


async def _websocket(scope, receive, send):
    event = await receive()
    if event["type"] != "websocket.connect":
        return
    accept = {"type": "websocket.accept"}
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "subprotocol" in query:
        accept["subprotocol"] = query["subprotocol"][0]
    await send(accept)
    if scope.get("path") == "/close":
        await send({"type": "websocket.send", "text": "bye"})
        close = {"type": "websocket.close", "code": int(query.get("code", ["1000"])[0])}
        close["reason"] = query.get("reason", [""])[0]
        try:
            await send(close)
        except Exception as exc:  # reported to the client: what the server refused
            await send({"type": "websocket.send", "text": f"refused: {exc}"})
        return
    if scope.get("path") == "/scope":
        report = {
            "extensions": sorted((scope.get("extensions") or {}).keys()),
            "subprotocols": list(scope.get("subprotocols") or ()),
            "asgi": scope.get("asgi", {}),
        }
        await send({"type": "websocket.send", "text": json.dumps(report)})
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            # What the server tells of the client's close, for tests/test_asgi_servers.py.
            where = scope.get("path", "") + "?" + scope.get("query_string", b"").decode("latin-1")
            print("asgi_echo: websocket.disconnect", where, json.dumps(event, sort_keys=True), flush=True)
            return
        if event["type"] != "websocket.receive":
            continue
        if event.get("text") is not None:
            await send({"type": "websocket.send", "text": event["text"]})
        else:
            await send({"type": "websocket.send", "bytes": event.get("bytes") or b""})
