// Drives EventRelay's websocket with the official Phoenix JavaScript client.
// Environment: ER_WS_URL (ws://host:port/socket), ER_SUB (subscription id), ER_CONSUMER,
// ER_PRODUCER (JWTs), ER_TOPIC (topic to publish to), ER_EXPECT (events to await before
// publishing one over the socket). Prints one JSON object per line; exits 0 on success.
const { Socket } = require("phoenix");
const WebSocket = require("ws");

const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const fail = (why) => { out({ error: why }); process.exit(1); };
setTimeout(() => fail("timed out"), 30000);

const expect = Number(process.env.ER_EXPECT || "0");
const socket = new Socket(process.env.ER_WS_URL, { transport: WebSocket, heartbeatIntervalMs: 500 });
socket.onError((e) => out({ socket_error: String(e && e.message || e) }));
socket.connect();

const offsets = [];
let published = false;

// A join with a forged token must be refused.
const bad = socket.channel("events:00000000-0000-0000-0000-000000000000", { consumer_token: "not.a.jwt" });

const channel = socket.channel(`events:${process.env.ER_SUB}`, {
  consumer_token: process.env.ER_CONSUMER,
  producer_token: process.env.ER_PRODUCER,
});
channel.on("event:published", (e) => {
  offsets.push(e.offset);
  if (offsets.length === expect && !published) {
    published = true;
    channel
      .push("publish_events", {
        topic: process.env.ER_TOPIC,
        durable: true,
        events: [{ name: "from.phoenix", data: JSON.stringify({ via: "phoenix.js" }), source: "js" }],
      })
      .receive("ok", (r) => out({ published: r.offsets }))
      .receive("unauthorized", (r) => fail("publish unauthorized: " + JSON.stringify(r)))
      .receive("error", (r) => fail("publish error: " + JSON.stringify(r)));
  }
  if (offsets.length === expect + 1) {
    out({ offsets, last: e });
    channel.leave().receive("ok", () => { out({ left: true }); socket.disconnect(() => process.exit(0)); });
  }
});
bad
  .join()
  .receive("ok", () => fail("forged token was accepted"))
  .receive("error", (r) => {
    out({ refused: r.reason });
    bad.leave();
    channel
      .join()
      .receive("ok", () => out({ joined: true }))
      .receive("error", (r) => fail("join refused: " + JSON.stringify(r)));
  });
