/* /nodes/html: node table, classifier status, latency plots and recent errors (polled). */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const urls = window.FACEWIRE.urls;
  const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
  const txt = (v) => (v === null || v === undefined || v === "" ? "—" : String(v));
  const charts = new Map();

  function cell(value, cls) { return FW.el("td", { class: cls || null }, value); }

  function stateCell(n) {
    const label = n.stale ? `${n.state} (stale)` : n.state;
    return FW.el("td", { class: `state ${n.stale ? "stale" : n.state}` }, label);
  }

  // intruder alerts (faces/alerts): how many, and the last one, as text
  function alertCell(n) {
    const a = n.last_alert;
    if (!n.alerts || !a) return cell("—", "alerts muted");
    const at = num(a.ts) ?? num(a.received_at);
    const label = `${n.alerts} · last ${FW.fmtTime(at)}: ${txt(a.count)} unknown in ${txt(a.window_s)} s`;
    return FW.el("td", { class: "alerts alert", title: FW.fmtDateTime(at) }, label);
  }

  function renderNodes(data) {
    const rows = data.nodes.map((n) => {
      const lat = n.latency_ms || {};
      const tr = FW.el("tr", { "data-node": n.node });
      tr.append(
        cell(n.node), stateCell(n),
        FW.el("td", { title: FW.fmtDateTime(n.last_seen) }, FW.fmtAge(n.age_s)),
        cell(txt(n.model), "muted"),
        cell(FW.fmtNum(num(n.fps), 1), "num"),
        cell(FW.fmtNum(num(lat.p50), 1), "num"),
        cell(FW.fmtNum(num(lat.p99), 1), "num"),
        cell(txt(lat.n), "num"),
        cell(txt(n.sent), "num"),
        cell(txt(n.dropped_dedup), "num"),
        cell(txt(n.buffered), "num"),
        cell(txt(n.results), "num"),
        cell(txt(n.errors), "num"),
        alertCell(n),
      );
      return tr;
    });
    $("node-rows").replaceChildren(...rows);
    $("nodes-empty").hidden = rows.length > 0;
  }

  function renderClassifier(c, now) {
    $("clf-missing").hidden = !!c;
    $("clf").hidden = !c;
    if (!c) return;
    $("clf-state").textContent = txt(c.state);
    $("clf-state").className = `v state ${c.state || "unknown"}`;
    $("clf-model").textContent = txt(c.model);
    const g = c.gallery || {};
    $("clf-gallery").textContent = `${txt(g.identities)} people · ${txt(g.vectors)} vectors`;
    $("clf-gallery").title = g.version ? `version ${g.version}` : "";
    $("clf-rate").textContent = FW.fmtNum(num(c.messages_per_s), 1);
    $("clf-processed").textContent = txt(c.processed);
    $("clf-rejected").textContent = txt(c.rejected);
    $("clf-age").textContent = FW.fmtAge(c.received_at ? now - c.received_at : null);
    const queues = c.queues || {}, dropped = c.dropped || {};
    const names = [...new Set([...Object.keys(queues), ...Object.keys(dropped)])].sort();
    $("clf-queues").tBodies[0].replaceChildren(...(names.length ? names.map((n) => {
      const tr = FW.el("tr", {});
      tr.append(cell(n), cell(txt(queues[n] ?? 0), "num"), cell(txt(dropped[n] ?? 0), "num"));
      return tr;
    }) : [FW.el("tr", {}, FW.el("td", { colspan: 3, class: "muted" }, "no queues"))]));
    const timings = c.timings && typeof c.timings === "object" ? c.timings : {};
    const keys = Object.keys(timings).sort();
    $("clf-timings").tBodies[0].replaceChildren(...(keys.length ? keys.map((k) => {
      const v = timings[k];
      const tr = FW.el("tr", {});
      tr.append(cell(k), cell(typeof v === "number" ? FW.fmtNum(v, 3) : JSON.stringify(v), "num"));
      return tr;
    }) : [FW.el("tr", {}, FW.el("td", { colspan: 2, class: "muted" }, "no timings"))]));
  }

  function renderLatency(data) {
    const box = $("latency-charts");
    const now = data.now;
    const seen = new Set();
    for (const n of data.nodes) {
      seen.add(n.node);
      let holder = charts.get(n.node);
      if (!holder) {
        const plot = FW.el("div", {});
        holder = FW.el("div", { class: "chart", "data-node": n.node }, FW.el("h3", {}, n.node), plot);
        holder.plot = plot;
        charts.set(n.node, holder);
        box.append(holder);
      }
      const hist = n.history || [];
      const res = n.result_stages_ms || n.result_latency || [];
      const ago = (t) => t - now;
      FW.chart(holder.plot, {
        height: 220, yLabel: "ms",
        xLabel: data.window_s ? `seconds ago (results of the last ${Math.round(data.window_s / 60)} min)` : "seconds ago",
        xFormat: (v) => String(Math.round(-v)),
        series: [
          { label: "stages sum", color: "#7f8c9a", kind: "dots", points: res.map((p) => [ago(p[0]), p[1]]) },
          { label: "p50", color: "#1f5fbf", points: hist.map((p) => [ago(p[0]), p[1]]) },
          { label: "p99", color: "#b33a3a", points: hist.map((p) => [ago(p[0]), p[2]]) },
        ],
        empty: "no latency data yet",
      });
    }
    for (const [name, holder] of charts) {
      if (!seen.has(name)) { holder.remove(); charts.delete(name); }
    }
  }

  function renderErrors(e) {
    const rows = e.errors.map((x) => {
      const tr = FW.el("tr", {});
      const detail = typeof x.detail === "string" ? x.detail : x.detail === undefined ? "" : JSON.stringify(x.detail);
      tr.append(
        FW.el("td", { title: FW.fmtDateTime(x.received_at) }, FW.fmtTime(x.received_at)),
        cell(x.node), cell(txt(x.reason)), cell(detail || "—"),
        cell(txt(x.seq), "num"), cell(txt(x.count), "num"),
      );
      return tr;
    });
    $("error-rows").replaceChildren(...rows);
    $("errors-empty").hidden = rows.length > 0;
    const m = e.malformed || { total: 0 };
    $("malformed").textContent = m.total
      ? `${m.total} message(s) could not be understood and were ignored; last: ${m.recent[0].topic}: ${m.recent[0].reason}`
      : "";
  }

  FW.poll(async () => {
    const [data, errs] = await Promise.all([
      FW.getJSON(urls.nodes),
      FW.getJSON(`${urls.errors}?limit=50`),
    ]);
    renderNodes(data);
    renderClassifier(data.classifier, data.now);
    renderLatency(data);
    renderErrors(errs);
    $("nodes-updated").textContent = `updated ${FW.fmtTime(data.now)}`;
  }, 2000);
})();
