/* /log/html: the detection table, filled once from /log and then live from /log/stream. */
"use strict";

(function () {
  const MAX_ROWS = 500;
  const urls = window.FACEWIRE.urls;
  const tbody = document.getElementById("rows");
  const badge = document.getElementById("stream-state");
  const empty = document.getElementById("log-empty");
  const count = document.getElementById("row-count");
  const fNode = document.getElementById("f-node");
  const fName = document.getElementById("f-name");
  // Set once per page load; a reload would replace it (the browser test checks this).
  window.facewireLogLoadedAt = Date.now();

  let lastId = 0;
  let source = null;
  let generation = 0;

  function row(d, fresh) {
    const tr = FW.el("tr", { class: `band-${d.band}${fresh ? " fresh" : ""}`, "data-id": d.id });
    tr.append(
      FW.el("td", { title: FW.fmtDateTime(d.received_at) }, FW.fmtTime(d.received_at)),
      FW.el("td", {}, d.node),
      FW.el("td", { class: "name" }, d.name),
      FW.el("td", { class: "num" }, FW.fmtNum(d.score, 3)),
      FW.el("td", { class: "num" }, FW.fmtNum(d.threshold, 3)),
      FW.el("td", { class: "num" }, FW.fmtNum(d.stages_ms ?? d.latency_ms, 1)),
      FW.el("td", { class: "num" }, d.seq === null ? "—" : d.seq),
      FW.el("td", { class: "muted" }, d.model || "—"),
    );
    return tr;
  }

  function refreshCount() {
    const n = tbody.rows.length;
    empty.hidden = n > 0;
    count.textContent = n ? `${n} shown (newest first)` : "";
  }

  function setBadge(text, cls) {
    badge.textContent = text;
    badge.className = `pill ${cls || ""}`;
  }

  function filters() {
    const p = new URLSearchParams();
    if (fNode.value.trim()) p.set("node", fNode.value.trim());
    if (fName.value.trim()) p.set("name", fName.value.trim());
    return p;
  }

  function add(d) {
    if (d.id <= lastId) return;
    lastId = d.id;
    tbody.prepend(row(d, true));
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
    refreshCount();
  }

  async function start() {
    const gen = ++generation;
    if (source) { source.close(); source = null; }
    setBadge("loading…");
    const p = filters();
    p.set("limit", "200");
    let data;
    try {
      data = await FW.getJSON(`${urls.log}?${p}`);
    } catch (e) {
      setBadge("monitor unreachable, retrying", "down");
      setTimeout(() => { if (gen === generation) start(); }, 3000);
      return;
    }
    if (gen !== generation) return;
    tbody.replaceChildren(...data.detections.map((d) => row(d, false)));
    lastId = data.detections.length ? data.detections[0].id : data.last_id;
    refreshCount();
    const sp = filters();
    sp.set("since", String(lastId));
    // The stream first replays anything newer than lastId, then pushes new rows. On a
    // dropped connection EventSource reconnects by itself with Last-Event-ID.
    source = new EventSource(`${urls.stream}?${sp}`);
    source.addEventListener("detection", (e) => add(JSON.parse(e.data)));
    // More rows were missed than the stream replays: reload the table instead.
    source.addEventListener("gap", () => { if (gen === generation) start(); });
    source.onopen = () => setBadge("live", "live");
    source.onerror = () => {
      setBadge("reconnecting…", "down");
      // EventSource retries network errors itself but gives up on an HTTP error
      // (e.g. 503: too many streams): start over after a pause.
      if (source && source.readyState === EventSource.CLOSED) {
        setTimeout(() => { if (gen === generation) start(); }, 5000);
      }
    };
  }

  let debounce = null;
  for (const input of [fNode, fName]) {
    input.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(start, 300);
    });
  }
  start();
})();
