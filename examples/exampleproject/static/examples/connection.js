// Shows the state of a DjangoWebSocket in an element, as every example page does: its text
// ("open", "reconnecting in 1.2 s…"), a class named after the state, and data-opens, the number
// of connections opened so far (2: the page reconnected once).
"use strict";

function showConnection(socket, element) {
  let opens = 0;
  const show = (text) => {
    element.className = socket.state;
    element.textContent = text;
    element.dataset.opens = String(opens);
  };
  const why = (event) => (event.code === 1006 ? event.reason || "connection lost" : `code ${event.code}`);
  socket.addEventListener("connecting", (event) =>
    show(event.attempt ? `connecting (retry ${event.attempt})…` : "connecting…"));
  socket.addEventListener("open", () => {
    opens += 1;
    show(opens > 1 ? "open (reconnected)" : "open");
  });
  socket.addEventListener("reconnecting", (event) =>
    show(`closed (${why(event)}), reconnecting in ${(event.delay / 1000).toFixed(1)} s…`));
  socket.addEventListener("stopped", (event) =>
    show(event.cause === "close" ? "closed" : `stopped (${event.reason || why(event)})`));
}
