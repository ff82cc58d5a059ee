// One live stream per browser, shared by every open page of the UI:
// browsers allow six HTTP/1.1 connections to a host, so a stream per tab
// would stall the seventh tab. Pages that cannot share a worker open their
// own stream (ui.js).
"use strict";

const ports = new Set();
let stream = null;
let retry = null;

function broadcast(msg) {
  for (const p of ports) p.postMessage(msg);
}

function connect() {
  clearTimeout(retry);
  stream = new EventSource("/live");
  stream.onopen = () => broadcast({ type: "open" });
  stream.onerror = () => {
    broadcast({ type: "error" });
    // Closed for good (signed out, server gone): try again later, with
    // the cookies of the time.
    if (stream.readyState === EventSource.CLOSED) {
      stream = null;
      retry = setTimeout(() => { if (ports.size > 0) connect(); }, 5000);
    }
  };
  for (const type of ["app", "history", "event", "reload"]) {
    stream.addEventListener(type, (ev) => broadcast({ type, data: ev.data }));
  }
}

onconnect = (e) => {
  const port = e.ports[0];
  ports.add(port);
  port.onmessage = (m) => {
    if (m.data !== "close") return;
    ports.delete(port);
    if (ports.size === 0 && stream) {
      stream.close();
      stream = null;
    }
  };
  port.start();
  if (!stream) connect();
  else if (stream.readyState === EventSource.OPEN) port.postMessage({ type: "open" });
};
