/* /log/html: the detection table, filled once from /log and then live from /log/stream. */
"use strict";

(function () {
  // rows kept on the page (older ones are in /log)
  const MAX_ROWS = 100;
  // A new row goes into a small table of the newest rows; the rest sit in a second table
  // on a layer of its own, which a new row moves without repainting (style.css). Rows
  // move over (and the page is trimmed to MAX_ROWS) in batches, when the browser is idle.
  const LIVE_ROWS = 25;
  const urls = window.FACEWIRE.urls;
  const tbody = document.getElementById("rows");
  const older = document.getElementById("older-rows");
  const whenIdle = window.requestIdleCallback || ((f) => setTimeout(f, 50));
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
      timeCell(d),
      FW.el("td", {}, d.node),
      nameCell(d),
      FW.el("td", { class: "num" }, FW.fmtNum(d.score, 3)),
      FW.el("td", { class: "num" }, FW.fmtNum(d.threshold, 3)),
      FW.el("td", { class: "num" }, FW.fmtNum(d.stages_ms ?? d.latency_ms, 1)),
      FW.el("td", { class: "num" }, d.seq === null ? "—" : d.seq),
      FW.el("td", { class: "muted" }, d.model || "—"),
      teachCell(d),
    );
    return tr;
  }

  /* The frame's name, and its track's decision where the two differ: a stranger named
     in one frame of many is still "unknown" over the track (what Home Assistant and
     the events say). */
  function nameCell(d) {
    const td = FW.el("td", { class: "name" }, d.name);
    if (d.track_name && d.track_name !== d.name) {
      td.append(FW.el("span", {
        class: "track-name",
        title: `this frame says ${d.name}; the track it belongs to, over all its frames, says ${d.track_name}`,
      }, `track: ${d.track_name}`));
    }
    return td;
  }

  /* Received time, and a "late" badge for a result that came long after its capture
     (edge clock vs this monitor's: a skew between them shows up here too). */
  function timeCell(d) {
    const td = FW.el("td", { title: FW.fmtDateTime(d.received_at) }, FW.fmtTime(d.received_at));
    const limit = window.FACEWIRE.lateAfterS;
    const late = d.late ?? (typeof d.delay_s === "number" && d.delay_s > limit);
    if (late) {
      td.append(FW.el("span", {
        class: "late", title: `received ${FW.fmtNum(d.delay_s, 1)} s after capture (late: more than ${limit} s)`,
      }, `late ${FW.fmtNum(d.delay_s, 1)} s`));
    }
    return td;
  }

  /* Buttons that teach the classifier from a sighting (POST /api/teach). */
  const status = document.getElementById("teach-status");
  function teachCell(d) {
    const td = FW.el("td", { class: "teach" });
    if (d.seq === null || d.seq === undefined) return td;
    const name = FW.el("button", { type: "button", class: "teach-name", title: "name the person of this sighting" }, "this is…");
    name.addEventListener("click", () => {
      const who = window.prompt(`Who is this (${d.node}, seq ${d.seq})?`, d.name === "unknown" ? "" : d.name);
      if (who && who.trim()) teach(d, who.trim(), false);
    });
    td.append(name);
    if (d.name !== "unknown") {
      const wrong = FW.el("button", { type: "button", class: "teach-wrong", title: `this was not ${d.name}` }, "wrong");
      wrong.addEventListener("click", () => teach(d, d.name, true));
      td.append(wrong);
    }
    return td;
  }

  async function teach(d, name, wrong) {
    status.textContent = wrong ? `telling the classifier this was not ${name} …` : `teaching the classifier ${name} …`;
    let sent;
    try {
      const r = await fetch(urls.teach, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": window.FACEWIRE.csrf },
        body: JSON.stringify({ node: d.node, seq: d.seq, name, wrong }),
      });
      sent = await r.json();
      if (!r.ok) { status.textContent = `not sent: ${sent.error || r.status}`; return; }
    } catch (e) {
      status.textContent = `not sent: ${e}`;
      return;
    }
    for (let i = 0; i < 40; i++) {  // the classifier answers within a rebuild: seconds
      await new Promise((res) => setTimeout(res, 250));
      const got = await FW.getJSON(`${urls.galleryReplies}?request_id=${encodeURIComponent(sent.request_id)}`);
      const reply = got.replies && got.replies[0];
      if (reply) {
        const refused = reply.refused && reply.refused.length ? ` (refused: ${reply.refused.join("; ")})` : "";
        status.textContent = `${reply.ok ? "done" : "not done"}: ${reply.detail}${refused}`;
        return;
      }
    }
    status.textContent = "sent, but no answer from the classifier yet";
  }

  function refreshCount() {
    const n = tbody.rows.length + older.rows.length;
    older.parentElement.hidden = older.rows.length === 0;
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

  let moving = false;
  function add(d) {
    if (d.id <= lastId) return;
    lastId = d.id;
    tbody.prepend(row(d, true));
    // a hidden tab gets idle callbacks rarely, if ever, while rows keep coming
    if (document.hidden || tbody.rows.length >= MAX_ROWS) {
      moveOlder();
    } else if (tbody.rows.length >= 2 * LIVE_ROWS && !moving) {
      moving = true;
      whenIdle(moveOlder, { timeout: 1000 });
    }
    refreshCount();
  }

  /* All but the newest LIVE_ROWS rows to the top of the older table, in one go. */
  function moveOlder() {
    moving = false;
    const moved = Array.from(tbody.rows).slice(LIVE_ROWS);
    for (const tr of moved) tr.remove();
    older.prepend(...moved);
    while (older.rows.length && tbody.rows.length + older.rows.length > MAX_ROWS) older.deleteRow(-1);
    refreshCount();
  }

  function show(rows) {
    tbody.replaceChildren(...rows.slice(0, LIVE_ROWS));
    older.replaceChildren(...rows.slice(LIVE_ROWS));
  }

  async function start() {
    const gen = ++generation;
    if (source) { source.close(); source = null; }
    setBadge("loading…");
    const p = filters();
    p.set("limit", String(MAX_ROWS));
    let data;
    try {
      data = await FW.getJSON(`${urls.log}?${p}`);
    } catch (e) {
      setBadge("monitor unreachable, retrying", "down");
      setTimeout(() => { if (gen === generation) start(); }, 3000);
      return;
    }
    if (gen !== generation) return;
    show(data.detections.map((d) => row(d, false)));
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
