"""The ASGI entry point: the project's views, WebSocket ones included, on any ASGI server.

In ``asgi.py``, where Django's ``get_asgi_application`` was::

    from django_websocket.asgi import get_asgi_application

    application = get_asgi_application()

HTTP requests go to Django's own ASGI handler, exactly as before. A ``websocket`` scope becomes a
Django request (``GET``, the scope's path, query string and headers) that goes through the
URLconf, the middleware and the view's decorators like any other request, so ``request.user``,
sessions, the Origin policy, ``@require_websocket``/``@accept_websocket`` and
:class:`~django_websocket.middleware.WebSocketMiddleware` behave as on the WSGI servers:

* a regular (``def``) view runs, with the whole request, in a thread of its own (at most
  :setting:`WEBSOCKET_ASGI_THREADS` at once; above, the handshake is refused with 503), never
  in asgiref's one shared thread, so that one slow view stalls no other; its
  ``request.websocket`` is an :class:`~django_websocket.events.ASGIWebSocket`;
* an ``async def`` view runs on the event loop, through Django's asynchronous request path;
  its ``request.websocket`` is an :class:`~django_websocket.events.AsyncWebSocket`.

A view's refusal before it accepts (an HTTP response) reaches the client with its status and body
where the server offers the ``websocket.http.response`` extension, and as the server's 403
elsewhere. On the ``lifespan`` shutdown event, every WebSocket still open gets a close 1001.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any, TypeAlias, TypeVar

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.core import signals
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.core.handlers.asgi import ASGIRequest, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.dispatch import Signal
from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import Resolver404, get_resolver, set_script_prefix

from .events import ASGIWebSocket, AsyncWebSocket, EventHandover, Receive, Send
from .handshake import Request
from .websocket import ENVIRON_KEY, close_all

__all__ = ["get_asgi_application", "WebSocketASGIHandler"]

logger = logging.getLogger("django_websocket")

_T = TypeVar("_T")

#: An ASGI connection scope.
Scope: TypeAlias = "dict[str, Any]"
# request.websocket of a WebSocket request (django_websocket.handler's subclasses of these).
_EventConnection: TypeAlias = "ASGIWebSocket | AsyncWebSocket"


def get_asgi_application() -> WebSocketASGIHandler:
    """Set Django up and return the ASGI application of the project: Django's for HTTP, and
    WebSocket requests served by the project's views (see the module's docstring)."""
    import django

    django.setup(set_prefix=False)
    return WebSocketASGIHandler()


class _SyncHandler(BaseHandler):
    """Django's request handling with its middleware in synchronous mode, as under WSGI: for
    the threads that run regular WebSocket views."""

    def __init__(self) -> None:
        super().__init__()
        self.load_middleware(is_async=False)


async def _send_signal(signal: Signal, **kwargs: Any) -> None:
    if hasattr(signal, "asend"):  # Django >= 5.0
        await signal.asend(sender=WebSocketASGIHandler, **kwargs)
    else:
        await sync_to_async(signal.send)(sender=WebSocketASGIHandler, **kwargs)


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _reads_on_receive(receive: Receive) -> bool:
    # Granian's receive() is a method of its connection object (in its compiled module), and
    # reads the client's frames only while it is awaited: no bad frame is read, and the
    # connection is not failed, until the application asks for the next event. uvicorn, daphne,
    # hypercorn and gunicorn's asgi worker read the socket on their own.
    owner = getattr(receive, "__self__", None)
    return type(owner).__module__.partition(".")[0] == "granian"


class WebSocketASGIHandler:
    """The ASGI application of :func:`get_asgi_application`."""

    def __init__(self) -> None:
        self.http = DjangoASGIHandler()
        self._sync = _SyncHandler()
        self._busy_threads = 0  # regular views running now (changed on the loop only)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self.websocket(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(scope, receive, send)
        else:
            await self.http(scope, receive, send)

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                # Servers that close connections after this event let us say goodbye with 1001.
                await asyncio.get_running_loop().run_in_executor(None, close_all)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- websocket scopes -------------------------------------------------------------------

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        event = await receive()
        if event["type"] != "websocket.connect":
            return  # the client left before the handshake was handed to us
        loop = asyncio.get_running_loop()
        handshake = Request(
            "",
            list(scope.get("subprotocols") or ()),
            [],  # extensions are negotiated by the server
            _header(scope, b"origin"),
            _header(scope, b"host") or "",
            scope.get("path", ""),
        )
        extensions = scope.get("extensions") or {}
        handover = EventHandover(
            loop,
            receive,
            send,
            handshake,
            http_response="websocket.http.response" in extensions,
            reads_on_receive=_reads_on_receive(receive),
        )
        http_scope = dict(scope, type="http", method="GET", scheme="https" if scope.get("scheme") == "wss" else "http")
        set_script_prefix(get_script_prefix(http_scope))
        request = ASGIRequest(http_scope, io.BytesIO())
        request.META[ENVIRON_KEY] = handover
        handover.asynchronous = self._resolves_to_async_view(request)
        try:
            websocket: _EventConnection | None
            if handover.asynchronous:
                websocket = await self._serve_async(scope, request, handover)
            else:
                websocket = await self._serve_sync(scope, request, handover)
        except asyncio.CancelledError:
            _cancelled(getattr(request, "websocket", None))
            raise
        # The request is over (its view returned, request_finished was sent): nothing of it
        # stays for as long as a detached connection lives on (its view's thread has ended).
        del request, http_scope
        if websocket is None:
            return
        try:
            # Closes the connection, or, once detached, lasts as long as it does: the server
            # closes the socket when this call returns.
            await websocket._finish()
        except asyncio.CancelledError:
            _cancelled(websocket)
            raise

    def _resolves_to_async_view(self, request: ASGIRequest) -> bool:
        # The request goes one way or the other before any middleware runs: the project's URLconf
        # decides (a middleware that changes request.urlconf does not change this choice).
        try:
            match = get_resolver().resolve(request.path_info)
        except Resolver404:
            return False
        return iscoroutinefunction(match.func)

    async def _serve_sync(self, scope: Scope, request: ASGIRequest, handover: EventHandover) -> _EventConnection | None:
        from .conf import settings

        if self._busy_threads >= settings.WEBSOCKET_ASGI_THREADS:
            logger.warning(
                "Refused WebSocket handshake to %s: %d views run already (WEBSOCKET_ASGI_THREADS)",
                request.path,
                self._busy_threads,
            )
            from .handler import error_response

            await self._refuse(error_response(503, "Too many WebSocket connections; try again later."), handover)
            return None
        self._busy_threads += 1
        try:
            # The view's thread ends when the view returns, detached or not.
            return await self._in_thread(self._run_sync, scope, request, handover)
        finally:
            self._busy_threads -= 1

    async def _in_thread(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` in a new daemon thread; its result or exception, on the loop.

        Not a ThreadPoolExecutor: the interpreter joins an executor's threads when it exits, and
        a view blocked in wait() then keeps the process alive for as long as its client stays.
        daphne stops its event loop on SIGTERM without cancelling the connections or telling the
        application anything, so the views are never woken: with executor threads the process
        did not exit. (The number of threads is bounded by WEBSOCKET_ASGI_THREADS all the same.)
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()

        def settle(result: _T | None, exc: BaseException | None) -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)  # type: ignore[arg-type]  # what function returned

        def run() -> None:
            _batch_scheduling()
            try:
                outcome: tuple[_T | None, BaseException | None] = (function(*args), None)
            except BaseException as exc:
                outcome = (None, exc)
            try:
                loop.call_soon_threadsafe(settle, *outcome)
            except RuntimeError:
                pass  # the loop is closed: the server has stopped, nobody waits for the result

        threading.Thread(target=run, name="websocket-view", daemon=True).start()
        return await future

    def _run_sync(self, scope: Scope, request: ASGIRequest, handover: EventHandover) -> _EventConnection | None:
        # The view's own thread: the whole request, as a WSGI server's thread runs it.
        loop = handover.loop
        signals.request_started.send(sender=WebSocketASGIHandler, scope=scope)
        response: HttpResponseBase | None = None
        try:
            response = self._sync.get_response(request)
            if not handover.taken:
                # A refusal: the loop sends it, then the response is finished here, in this
                # thread (request_finished closes the database connections it opened).
                asyncio.run_coroutine_threadsafe(self._refuse(response, handover), loop).result(timeout=30)
        finally:
            if response is not None:
                response.close()
            else:
                signals.request_finished.send(sender=WebSocketASGIHandler)
        return _websocket_of(request)

    async def _serve_async(
        self, scope: Scope, request: ASGIRequest, handover: EventHandover
    ) -> _EventConnection | None:
        await _send_signal(signals.request_started, scope=scope)
        response: HttpResponseBase | None = None
        try:
            response = await self.http.get_response_async(request)
            if not handover.taken:
                await self._refuse(response, handover)
        finally:
            await self._finish_response(response)
        return _websocket_of(request)

    async def _finish_response(self, response: HttpResponseBase | None) -> None:
        # request_finished, as Django's ASGI handler sends it: from a thread for sync code.
        if response is not None:
            await sync_to_async(response.close)()
        else:
            await _send_signal(signals.request_finished)

    async def _refuse(self, response: HttpResponseBase, handover: EventHandover) -> None:
        """Answer the handshake with ``response``: as HTTP where the server can, else close."""
        send = handover.send
        if handover.http_response:
            headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
            for cookie in response.cookies.values():
                headers.append((b"set-cookie", cookie.output(header="").strip().encode("latin-1")))
            if isinstance(response, StreamingHttpResponse):
                body = b"".join([bytes(chunk) async for chunk in _iterate(response.streaming_content)])
            else:
                body = response.content if isinstance(response, HttpResponse) else b""
            await send({"type": "websocket.http.response.start", "status": response.status_code, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            # ASGI: a close before the accept is answered with 403 by the server.
            await send({"type": "websocket.close", "code": 1008})


def _websocket_of(request: ASGIRequest) -> _EventConnection | None:
    # prepare() (django_websocket.handler) gives a WebSocket request its websocket.
    websocket: _EventConnection | None = getattr(request, "websocket", None)
    return websocket


def _cancelled(websocket: _EventConnection | None) -> None:
    """The server cancelled the connection's task (daphne and hypercorn on shutdown, daphne when
    a client is gone for longer than its application_close_timeout): end the connection, so
    that a view blocked in wait() wakes up in its thread and returns (its thread would otherwise
    keep the process from exiting), and stop our tasks."""
    if websocket is not None:
        websocket._cancelled()


def _batch_scheduling() -> None:
    """Mark the calling thread ``SCHED_BATCH`` (Linux): the event loop's thread wakes a view's
    thread for every message it receives, and a woken thread of the normal policy preempts the
    loop's thread at once where they share a core, only to wait for the GIL that thread holds (two
    context switches per message). A batch thread runs when the loop's thread waits or its
    time slice ends; its share of the CPU is the same."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed: the normal policy
        pass


async def _iterate(content: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(content, AsyncIterable):
        async for chunk in content:
            yield chunk
    else:
        for chunk in content:
            yield chunk
