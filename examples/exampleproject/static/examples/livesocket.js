// A WebSocket that shows its state on the page and opens again, with backoff, whenever it closes
// (a server restart, a network change), as every example page needs.
//
//   const live = new LiveSocket("/echo", {
//     state: document.getElementById("state"),  // shows "connecting…", "open", "closed…"
//     onopen: () => ...,                         // after each (re)connection: resend your state
//     onmessage: (data) => ...,                  // str for text messages, Blob for binary ones
//   });
//   live.send("hello");                          // false while the socket is not open
//
// The state element also gets a class (connecting, open, closed) and data-opens, the number of
// successful connections so far: 2 means the page reconnected once.
"use strict";

class LiveSocket {
  constructor(path, { state = null, onopen = () => {}, onmessage = () => {} } = {}) {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    this.url = scheme + location.host + path;
    this.stateElement = state;
    this.onopen = onopen;
    this.onmessage = onmessage;
    this.opens = 0;
    this.delay = LiveSocket.FIRST_DELAY;
    this.socket = null;
    this.connect();
  }

  connect() {
    this.show("connecting", "connecting…");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = () => {
      this.opens += 1;
      this.delay = LiveSocket.FIRST_DELAY;
      this.show("open", this.opens > 1 ? "open (reconnected)" : "open");
      this.onopen();
    };
    socket.onmessage = (event) => this.onmessage(event.data);
    socket.onclose = (event) => {
      // Exponential backoff with jitter, so that the pages of a restarted server do not all
      // come back at the same instant; capped, so that a page left open recovers soon enough.
      const wait = this.delay * (0.75 + Math.random() / 2);
      this.delay = Math.min(this.delay * 2, LiveSocket.MAX_DELAY);
      const why = event.code === 1006 ? "connection lost" : `code ${event.code}`;
      this.show("closed", `closed (${why}), reconnecting in ${(wait / 1000).toFixed(1)} s…`);
      setTimeout(() => this.connect(), wait);
    };
  }

  send(data) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
      return false;
    }
    this.socket.send(data);
    return true;
  }

  show(name, text) {
    if (this.stateElement) {
      this.stateElement.className = name;
      this.stateElement.textContent = text;
      this.stateElement.dataset.opens = String(this.opens);
    }
  }
}

LiveSocket.FIRST_DELAY = 500; // ms
LiveSocket.MAX_DELAY = 8000; // ms
