// The npm phoenix client as a long-lived consumer behind a proxy: it joins
// events:<ER_SUB> with params computed at every (re)join, so a rejoin after the socket was
// closed or cut resumes with after_offset = the last offset it saw. Prints {"offset": N}
// per event, {"joined": true} per join, and {"done": true} once it has seen ER_LAST.
const { Socket } = require("phoenix");
const WebSocket = require("ws");

const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const last = Number(process.env.ER_LAST);
setTimeout(() => { out({ error: "timed out" }); process.exit(1); }, Number(process.env.ER_DEADLINE_MS || "120000"));

let seen = 0;
const socket = new Socket(process.env.ER_WS_URL, {
  transport: WebSocket,
  heartbeatIntervalMs: 30000,
  reconnectAfterMs: () => 200 + Math.floor(Math.random() * 300),
  rejoinAfterMs: () => 200 + Math.floor(Math.random() * 300),
});
socket.onClose((e) => out({ closed: e && e.code }));
socket.connect();
const channel = socket.channel(`events:${process.env.ER_SUB}`, () => ({
  consumer_token: process.env.ER_CONSUMER,
  after_offset: seen,
}));
channel.on("event:published", (e) => {
  seen = e.offset;
  out({ offset: e.offset });
  if (e.offset >= last) {
    out({ done: true });
    process.exit(0);
  }
});
channel.join().receive("ok", () => out({ joined: true }));
