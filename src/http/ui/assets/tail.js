// Live tail: reads the page's Server-Sent Events stream and prepends each event to the table.
// Text only (textContent), never HTML, so event data cannot inject markup. Vendored, no deps.
(function () {
  "use strict";
  var table = document.getElementById("tail");
  var status = document.getElementById("tail-status");
  if (!table || !window.EventSource) { return; }
  var body = table.tBodies[0];
  var topic = table.getAttribute("data-topic");
  var keep = 200;
  function say(state, text) { status.setAttribute("data-state", state); status.textContent = text; }
  function cell(row, text, cls) {
    var td = row.insertCell(-1); td.textContent = text; if (cls) { td.className = cls; } return td;
  }
  var source = new EventSource(table.getAttribute("data-stream"));
  source.addEventListener("ready", function () { say("live", "Live: waiting for new events."); });
  source.addEventListener("lagged", function (m) { say("live", "Skipped " + m.data + " event(s): the browser fell behind."); });
  source.addEventListener("event", function (m) {
    var e = JSON.parse(m.data);
    var row = body.insertRow(0);
    row.className = "new";
    var td = row.insertCell(-1);
    if (e.offset > 0) {
      var a = document.createElement("a");
      a.href = "/topics/" + encodeURIComponent(topic) + "/events/" + e.offset;
      a.textContent = String(e.offset);
      td.appendChild(a);
    } else { td.textContent = "live only"; }
    cell(row, e.name); cell(row, e.identifier); cell(row, e.occurred_at, "mono"); cell(row, e.data, "mono clip");
    while (body.rows.length > keep) { body.deleteRow(-1); }
    say("live", "Live: " + body.rows.length + " event(s) shown.");
  });
  source.onerror = function () { say("reconnecting", "Connection lost: reconnecting…"); };
})();
