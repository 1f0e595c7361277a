/*
 * django-websocket's browser client: a WebSocket that opens again by itself.
 *
 *   <script src="{% static 'django_websocket/websocket.js' %}"></script>
 *   const socket = new DjangoWebSocket("/echo", { json: true });
 *   socket.addEventListener("json", (event) => console.log(event.data));
 *   socket.sendJSON({ hello: "world" });
 *
 * A plain script, no dependencies, no build step: it defines the global DjangoWebSocket. An ES
 * module can load it for that side effect (import ".../websocket.js") and then use the global.
 * The documentation (docs/topics/browser-client.rst, docs/reference/browser-client.rst) says
 * what each option, event and method does, and what the client can and cannot promise.
 */
(function () {
  "use strict";

  // Every option and its default: DjangoWebSocket.defaults, which a site may change once for
  // all its pages. An option not listed here is an error (a typo would otherwise do nothing).
  const defaults = {
    protocols: [], // subprotocols offered in the handshake
    binaryType: "blob", // or "arraybuffer": what event.data is for a binary message
    autoConnect: true, // false: wait for connect()
    json: false, // true: parse each text message and fire "json" (or "jsonerror")
    initialDelay: 500, // ms: the longest wait before the first reconnection attempt
    maxDelay: 30000, // ms: the longest wait before any attempt
    factor: 2, // each failure in a row multiplies the longest wait by this
    jitter: 1, // 1: full jitter, a wait drawn from [0, longest]; 0: always the longest
    resetAfter: 5000, // ms a connection must stay open for the waits to start small again
    maxRetries: Infinity, // failures in a row after which the client stops
    stopOn: [[4000, 4999]], // close codes that stop the client (1008 always does)
    queueLimit: 100, // messages kept while the connection is down; 0 keeps none
    queueDrop: "oldest", // which message goes past the limit: "oldest" or "newest"
    openTimeout: 10000, // ms an attempt may take to open; 0: the browser's own limit
    idleTimeout: 0, // ms without any message after which the connection is deemed dead; 0: off
    heartbeatInterval: 0, // ms without any message after which heartbeatMessage is sent; 0: off
    heartbeatMessage: "ping", // what a heartbeat sends
    heartbeatReply: null, // a message equal to this is the server's answer: not dispatched
    watchNetwork: true, // follow the browser's online/offline events
  };

  const STATES = ["connecting", "open", "closing", "reconnecting", "stopped"];
  const EVENTS = [
    "statechange", "connecting", "open", "message", "json", "jsonerror",
    "close", "reconnecting", "stopped", "drop",
  ];
  // Always final: the server says the page may not have this connection, and asking again
  // will not change its mind.
  const POLICY_VIOLATION = 1008;
  // A close() waits this long for the server's close frame before giving the socket up: on a
  // dead connection the browser could otherwise keep it "closing" for minutes.
  const CLOSING_TIMEOUT = 5000;
  // A watch timer that fires this much later than asked means the page was throttled or
  // frozen (a hidden tab, a suspended laptop): that silence is not the server's.
  const LATE = 1000;

  function now() {
    return performance.now();
  }

  // "/echo" and "echo" are relative to the page, http(s) URLs become ws(s) ones: a page served
  // over https gets wss, which is also the only scheme such a page may open.
  function resolve(url) {
    const base = typeof document !== "undefined" ? document.baseURI : location.href;
    let resolved;
    try {
      resolved = new URL(String(url), base);
    } catch {
      throw new SyntaxError(`DjangoWebSocket: not a URL: ${url}`); // as WebSocket says it
    }
    if (resolved.protocol === "http:") {
      resolved.protocol = "ws:";
    } else if (resolved.protocol === "https:") {
      resolved.protocol = "wss:";
    } else if (resolved.protocol !== "ws:" && resolved.protocol !== "wss:") {
      throw new SyntaxError(`DjangoWebSocket: not a WebSocket URL: ${url}`);
    }
    resolved.hash = ""; // a fragment means nothing to the server, and older browsers refuse it
    return resolved.href;
  }

  // stopOn: an array of codes and [low, high] ranges, or a function (code, reason) => bool.
  function stopper(stopOn) {
    if (typeof stopOn === "function") {
      return stopOn;
    }
    if (!Array.isArray(stopOn)) {
      throw new TypeError("DjangoWebSocket: stopOn is an array of codes and [low, high] ranges, or a function");
    }
    return (code) =>
      stopOn.some((entry) => (Array.isArray(entry) ? entry[0] <= code && code <= entry[1] : entry === code));
  }

  function makeEvent(type, fields) {
    let event;
    if (type === "message") {
      event = new MessageEvent(type, { data: fields.data, origin: fields.origin });
    } else if (type === "close") {
      event = new CloseEvent(type, { code: fields.code, reason: fields.reason, wasClean: fields.wasClean });
    } else {
      event = new Event(type);
    }
    for (const [name, value] of Object.entries(fields)) {
      if (!(name in event)) {
        event[name] = value;
      }
    }
    return event;
  }

  class DjangoWebSocket extends EventTarget {
    constructor(url, options = {}) {
      super();
      for (const name of Object.keys(options)) {
        if (!(name in DjangoWebSocket.defaults)) {
          throw new TypeError(`DjangoWebSocket: unknown option ${name}`);
        }
      }
      const o = { ...DjangoWebSocket.defaults, ...options };
      if (o.queueDrop !== "oldest" && o.queueDrop !== "newest") {
        throw new TypeError('DjangoWebSocket: queueDrop is "oldest" or "newest"');
      }
      this.url = resolve(url);
      this.options = Object.freeze(o);
      this._stops = stopper(o.stopOn);
      this._binaryType = o.binaryType;
      this._state = "stopped";
      this._socket = null;
      this._queue = [];
      this._failures = 0; // connections in a row that failed or did not stay open resetAfter ms
      this._opens = 0;
      this._timer = null; // the wait before the next attempt
      this._openTimer = null;
      this._resetTimer = null;
      this._watchTimer = null;
      this._closingTimer = null;
      this._closeRequested = false;
      this._lastReceived = this._lastHeartbeat = this._graceFrom = -Infinity;
      this._handlers = {};
      this._network = {
        online: () => this._online(),
        offline: () => this._offline(),
      };
      if (o.autoConnect) {
        // The connection starts now (state "connecting", send() queues), but its first events
        // wait for the end of the page's current script, as a WebSocket's do: a listener added
        // right after "new" hears them.
        this._attempt(true); // may throw, as new WebSocket() does for bad protocols
        this._listenToNetwork(true);
      }
    }

    /** "connecting", "open", "closing", "reconnecting" or "stopped". */
    get state() {
      return this._state;
    }

    /** Messages waiting for the connection to open. */
    get queued() {
      return this._queue.length;
    }

    /** The subprotocol the server chose, "" when none (or no connection). */
    get protocol() {
      return this._socket ? this._socket.protocol : "";
    }

    /** Bytes handed to the open connection that the browser has not sent yet. */
    get bufferedAmount() {
      return this._socket ? this._socket.bufferedAmount : 0;
    }

    get binaryType() {
      return this._binaryType;
    }

    set binaryType(value) {
      this._binaryType = value;
      if (this._socket) {
        this._socket.binaryType = value;
      }
    }

    /** Connect now: at once when waiting to reconnect, again after a stop; else nothing. */
    connect() {
      if (this._socket) {
        return; // connecting, open or closing
      }
      if (this._state === "stopped") {
        this._failures = 0;
        this._opens = 0;
        this._listenToNetwork(true);
      }
      this._closeRequested = false;
      this._attempt();
    }

    /**
     * Send a message (a string, Blob, ArrayBuffer or typed array) now if the connection is
     * open, else queue it for the next connection. True when it was handed to an open
     * connection, false when queued or dropped.
     */
    send(data) {
      if (this._state === "open" && this._socket.readyState === WebSocket.OPEN) {
        this._socket.send(data);
        return true;
      }
      if (this._state === "stopped" || this._state === "closing") {
        this._drop(data, "stopped");
        return false;
      }
      // Past the limit (0 included), "oldest" makes room by dropping the head of the queue, which
      // is this very message when the limit is 0; "newest" refuses this message.
      if (this._queue.length < this.options.queueLimit) {
        this._queue.push(data);
      } else if (this.options.queueDrop === "newest") {
        this._drop(data, "overflow");
      } else {
        this._queue.push(data);
        this._drop(this._queue.shift(), "overflow");
      }
      return false;
    }

    /** send(JSON.stringify(value)); throws as JSON.stringify does. */
    sendJSON(value) {
      return this.send(JSON.stringify(value));
    }

    /** Close for good (until connect()): the client does not reconnect. */
    close(code = 1000, reason = "") {
      if (code !== 1000 && !(code >= 3000 && code <= 4999)) {
        throw new DOMException(`DjangoWebSocket: close code ${code} is not 1000 nor 3000-4999`, "InvalidAccessError");
      }
      this._closeRequested = true;
      clearTimeout(this._timer);
      this._timer = null;
      const socket = this._socket;
      if (!socket) {
        if (this._state !== "stopped") {
          this._stop("close", code, reason);
        }
        return;
      }
      if (this._state === "closing") {
        return;
      }
      this._setState("closing");
      this._clearWatch();
      socket.close(code, reason);
      this._closingTimer = setTimeout(() => this._abandon(socket, code, reason), CLOSING_TIMEOUT);
    }

    // --- the connection's life ------------------------------------------------------------

    _attempt(deferEvents = false) {
      clearTimeout(this._timer);
      this._timer = null;
      const socket = new WebSocket(this.url, this.options.protocols);
      socket.binaryType = this._binaryType;
      this._socket = socket;
      const attempt = this._failures;
      if (deferEvents) {
        const previous = this._state;
        this._state = "connecting";
        queueMicrotask(() => {
          if (this._socket === socket && this._state === "connecting") {
            this._emit("statechange", { state: "connecting", previous });
            this._emit("connecting", { attempt });
          }
        });
      } else {
        this._setState("connecting");
        this._emit("connecting", { attempt });
      }
      socket.onopen = () => this._opened(socket);
      socket.onmessage = (event) => this._received(socket, event);
      socket.onclose = (event) => this._closed(socket, event.code, event.reason, event.wasClean);
      if (this.options.openTimeout > 0) {
        this._openTimer = setTimeout(
          () => this._abandon(socket, 1006, `not open within ${this.options.openTimeout} ms`),
          this.options.openTimeout,
        );
      }
    }

    _opened(socket) {
      if (socket !== this._socket) {
        return;
      }
      clearTimeout(this._openTimer);
      this._opens += 1;
      // Only a connection that lasts earns small waits again: a server that accepts and then
      // closes at once (a crash at start, a refusal after the handshake) keeps the waits growing.
      this._resetTimer = setTimeout(() => {
        this._failures = 0;
      }, this.options.resetAfter);
      this._lastReceived = now();
      this._lastHeartbeat = -Infinity;
      this._graceFrom = -Infinity;
      // The queue goes first, in the order send() was called: a listener of "open" (or of
      // "statechange") that sends the page's current state (a query, a position) then has the
      // last word.
      const queue = this._queue;
      this._queue = [];
      for (const data of queue) {
        socket.send(data);
      }
      this._setState("open");
      this._emit("open", { reconnected: this._opens > 1 });
      if (socket === this._socket && this._state === "open") {
        this._watch(now());
      }
    }

    _received(socket, event) {
      if (socket !== this._socket) {
        return;
      }
      this._lastReceived = now();
      const data = event.data;
      if (this.options.heartbeatReply !== null && data === this.options.heartbeatReply) {
        return;
      }
      this._emit("message", { data, origin: event.origin });
      if (this.options.json && typeof data === "string") {
        let value;
        try {
          value = JSON.parse(data);
        } catch (error) {
          this._emit("jsonerror", { data, error });
          return;
        }
        this._emit("json", { data: value, text: data });
      }
    }

    // Dead-connection detection. The browser has no ping for the page: the only sign of life is
    // a message. One timer, re-armed from the time of the last message rather than per message.
    _watch(due) {
      const { idleTimeout, heartbeatInterval } = this.options;
      this._watchTimer = null;
      if (!idleTimeout && !heartbeatInterval) {
        return;
      }
      const at = now();
      if (at - due > LATE) {
        this._graceFrom = at; // the page slept: the server gets a full idleTimeout from now
      }
      const since = at - Math.max(this._lastReceived, this._graceFrom);
      if (idleTimeout && since >= idleTimeout) {
        this._abandon(this._socket, 1006, `no message within ${idleTimeout} ms`);
        return;
      }
      let next = idleTimeout ? idleTimeout - since : Infinity;
      if (heartbeatInterval) {
        const quiet = at - Math.max(this._lastReceived, this._lastHeartbeat);
        if (quiet >= heartbeatInterval) {
          this._heartbeat();
          next = Math.min(next, heartbeatInterval);
        } else {
          next = Math.min(next, heartbeatInterval - quiet);
        }
      }
      next = Math.max(next, 10);
      const expectedAt = at + next;
      this._watchTimer = setTimeout(() => this._watch(expectedAt), next);
    }

    _heartbeat() {
      if (this._state === "open" && this._socket.readyState === WebSocket.OPEN) {
        this._lastHeartbeat = now();
        this._socket.send(this.options.heartbeatMessage);
      }
    }

    _clearWatch() {
      clearTimeout(this._openTimer);
      clearTimeout(this._resetTimer);
      clearTimeout(this._watchTimer);
      this._openTimer = this._resetTimer = this._watchTimer = null;
    }

    // Give a socket up without waiting for the browser to: a connection that does not open in
    // time, that went silent, or whose closing handshake does not end. Its own close event,
    // whenever it comes, is ignored.
    _abandon(socket, code, reason) {
      if (!socket || socket !== this._socket) {
        return;
      }
      socket.onopen = socket.onmessage = socket.onclose = null;
      try {
        socket.close();
      } catch {
        // already closing or closed: nothing more to ask of it
      }
      this._closed(socket, code, reason, false);
    }

    _closed(socket, code, reason, wasClean) {
      if (socket !== this._socket) {
        return;
      }
      this._clearWatch();
      clearTimeout(this._closingTimer);
      this._closingTimer = null;
      this._socket = null;
      this._failures += 1;
      let cause = null;
      if (this._closeRequested) {
        cause = "close";
      } else if (code === POLICY_VIOLATION || this._stops(code, reason)) {
        cause = "code";
      } else if (this._failures > this.options.maxRetries) {
        cause = "retries";
      }
      if (cause) {
        this._emit("close", { code, reason, wasClean, reconnect: false, delay: null });
        this._stop(cause, code, reason);
        return;
      }
      const delay = this._delay();
      this._emit("close", { code, reason, wasClean, reconnect: true, delay });
      if (this._socket || this._state === "stopped") {
        return; // a close listener called connect() or close()
      }
      this._setState("reconnecting");
      this._emit("reconnecting", { attempt: this._failures, delay, code, reason });
      if (this._state === "reconnecting" && !this._timer) {
        this._timer = setTimeout(() => this._attempt(), delay);
      }
    }

    // Exponential backoff with jitter: the longest wait doubles (factor) with each failure in a
    // row up to maxDelay, and the wait is drawn at random below it, so that the pages of a
    // restarted server do not all come back at the same instant.
    _delay() {
      const { initialDelay, maxDelay, factor, jitter } = this.options;
      const longest = Math.min(maxDelay, initialDelay * factor ** (this._failures - 1));
      return Math.round(longest * (1 - jitter) + Math.random() * longest * jitter);
    }

    _stop(cause, code, reason) {
      clearTimeout(this._timer);
      this._timer = null;
      this._listenToNetwork(false);
      this._setState("stopped");
      const queue = this._queue;
      this._queue = [];
      for (const data of queue) {
        this._drop(data, "stopped");
      }
      this._emit("stopped", { cause, code, reason });
    }

    _drop(data, cause) {
      this._emit("drop", { data, cause });
    }

    // --- the network ----------------------------------------------------------------------

    _listenToNetwork(on) {
      if (!this.options.watchNetwork || typeof window === "undefined") {
        return;
      }
      for (const [type, listener] of Object.entries(this._network)) {
        if (on) {
          window.addEventListener(type, listener);
        } else {
          window.removeEventListener(type, listener);
        }
      }
    }

    // Offline, the open connection is most likely dead, and the browser may take minutes to
    // notice: give it up, so that what the page sends meanwhile is queued rather than lost into
    // a dead socket. The attempts go on as usual (a server on the loopback is still there when
    // the browser says "offline"), and "online" cuts the wait short.
    _offline() {
      if (this._state === "connecting" || this._state === "open") {
        this._abandon(this._socket, 1006, "the browser went offline");
      }
    }

    // Back online: try at once rather than at the end of a wait grown while offline. An open
    // connection may not have survived the change of network: a heartbeat asks at once.
    _online() {
      if (this._state === "reconnecting") {
        this._attempt();
      } else if (this._state === "open" && this.options.heartbeatInterval) {
        this._heartbeat();
      }
    }

    // --- events ---------------------------------------------------------------------------

    _setState(state) {
      const previous = this._state;
      if (previous !== state) {
        this._state = state;
        this._emit("statechange", { state, previous });
      }
    }

    // dispatchEvent reports an exception of a listener (to the console and window.onerror)
    // without throwing it here: a faulty listener does not break the client's own bookkeeping.
    _emit(type, fields) {
      this.dispatchEvent(makeEvent(type, fields));
    }
  }

  // on<event> properties, as on WebSocket: one handler each, called where it was first set
  // among the listeners.
  for (const type of EVENTS) {
    Object.defineProperty(DjangoWebSocket.prototype, "on" + type, {
      get() {
        return this._handlers[type] ? this._handlers[type].handler : null;
      },
      set(handler) {
        if (!this._handlers[type]) {
          const entry = { handler: null };
          entry.listener = (event) => {
            if (typeof entry.handler === "function") {
              entry.handler.call(this, event);
            }
          };
          this._handlers[type] = entry;
          this.addEventListener(type, entry.listener);
        }
        this._handlers[type].handler = typeof handler === "function" ? handler : null;
      },
    });
  }

  DjangoWebSocket.defaults = defaults;
  DjangoWebSocket.STATES = Object.freeze(STATES.slice());
  DjangoWebSocket.EVENTS = Object.freeze(EVENTS.slice());
  DjangoWebSocket.resolve = resolve;
  globalThis.DjangoWebSocket = DjangoWebSocket;
})();
