/* Shared helpers of the monitor pages: formatting, fetching, a small SVG chart. */
"use strict";

const FW = (function () {
  const SVG_NS = "http://www.w3.org/2000/svg";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const pad = (n, w) => String(n).padStart(w || 2, "0");

  function fmtTime(epoch) {
    if (epoch === null || epoch === undefined) return "—";
    const d = new Date(epoch * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function fmtDateTime(epoch) {
    if (epoch === null || epoch === undefined) return "—";
    const d = new Date(epoch * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtTime(epoch)}`;
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 1) return "just now";
    if (seconds < 90) return `${Math.round(seconds)} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} d ago`;
  }

  function fmtNum(v, digits) {
    if (v === null || v === undefined || typeof v !== "number" || !isFinite(v)) return "—";
    return v.toFixed(digits === undefined ? 2 : digits);
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store" });
    if (r.status === 401 && window.FACEWIRE.login) {  // the login ran out: log in again
      window.location.assign(`${window.FACEWIRE.login}?next=${encodeURIComponent(location.pathname)}`);
    }
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r.json();
  }

  /* Call fn now and every ms milliseconds; errors are shown in the console only. */
  function poll(fn, ms) {
    let timer = null;
    async function tick() {
      try { await fn(); } catch (e) { console.warn(e); }
      timer = setTimeout(tick, ms);
    }
    tick();
    return () => clearTimeout(timer);
  }

  function niceTicks(a, b, n) {
    if (!(b > a)) return [a];
    let step = Math.pow(10, Math.floor(Math.log10((b - a) / n)));
    const err = (b - a) / n / step;
    step *= err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1;
    const out = [];
    for (let v = Math.ceil(a / step) * step; v <= b + step * 1e-9; v += step) out.push(+v.toFixed(10));
    return out;
  }

  /*
   * chart(container, {
   *   width, height, xLabel, yLabel, xDomain: [a, b], yDomain: [a, b],
   *   xFormat(v), yFormat(v),
   *   series: [{label, color, kind: "line"|"dots"|"bars", points: [[x, y], ...],
   *             bars: [[x0, x1, y], ...], dash}],
   *   markers: [{x, label, color, dash}],   // vertical lines
   *   points:  [{x, y, label, color}],      // highlighted points
   *   empty: "text shown when there is nothing to draw"
   * })
   */
  function chart(container, o) {
    const W = o.width || 600, H = o.height || 260;
    const m = { l: 54, r: 16, t: 28, b: 40 };
    const xs = [], ys = [];
    for (const s of o.series || []) {
      for (const p of s.points || []) { if (p[1] !== null) { xs.push(p[0]); ys.push(p[1]); } }
      for (const b of s.bars || []) { xs.push(b[0], b[1]); ys.push(b[2]); }
    }
    for (const mk of o.markers || []) if (mk.x !== null && mk.x !== undefined) xs.push(mk.x);
    for (const p of o.points || []) { xs.push(p.x); ys.push(p.y); }
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    if (!ys.length) {
      root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, o.empty || "no data yet"));
      container.replaceChildren(root);
      return;
    }
    let [x0, x1] = o.xDomain || [Math.min(...xs), Math.max(...xs)];
    if (!(x1 > x0)) { x0 -= 1; x1 += 1; }
    let [y0, y1] = o.yDomain || [Math.min(0, ...ys), Math.max(...ys) * 1.08];
    if (!(y1 > y0)) { y1 = y0 + 1; }
    const pw = W - m.l - m.r, ph = H - m.t - m.b;
    const sx = (v) => m.l + ((v - x0) / (x1 - x0)) * pw;
    const sy = (v) => m.t + ph - ((v - y0) / (y1 - y0)) * ph;
    const xf = o.xFormat || ((v) => String(+v.toPrecision(4)));
    const yf = o.yFormat || ((v) => String(+v.toPrecision(4)));

    for (const t of niceTicks(y0, y1, 5)) {
      root.append(svg("line", { class: "grid", x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t) }));
      root.append(svg("text", { x: m.l - 6, y: sy(t) + 4, "text-anchor": "end" }, yf(t)));
    }
    for (const t of niceTicks(x0, x1, 7)) {
      root.append(svg("line", { class: "grid", x1: sx(t), x2: sx(t), y1: m.t, y2: m.t + ph }));
      root.append(svg("text", { x: sx(t), y: m.t + ph + 15, "text-anchor": "middle" }, xf(t)));
    }
    root.append(svg("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph }));
    root.append(svg("line", { class: "axis", x1: m.l, x2: W - m.r, y1: m.t + ph, y2: m.t + ph }));
    if (o.xLabel) root.append(svg("text", { x: m.l + pw / 2, y: H - 6, "text-anchor": "middle" }, o.xLabel));
    if (o.yLabel) {
      root.append(svg("text", {
        x: 12, y: m.t + ph / 2, "text-anchor": "middle",
        transform: `rotate(-90 12 ${m.t + ph / 2})`,
      }, o.yLabel));
    }

    const plot = svg("g", {});
    const clipId = `clip${Math.random().toString(36).slice(2)}`;
    const clip = svg("clipPath", { id: clipId });
    clip.append(svg("rect", { x: m.l, y: m.t - 1, width: pw, height: ph + 2 }));
    root.append(clip);
    plot.setAttribute("clip-path", `url(#${clipId})`);
    for (const s of o.series || []) {
      const color = s.color || "#1f5fbf";
      if (s.kind === "bars") {
        for (const [a, b, y] of s.bars || []) {
          const top = sy(Math.max(y, y0));
          plot.append(svg("rect", {
            x: sx(a) + 0.5, width: Math.max(0, sx(b) - sx(a) - 1),
            y: top, height: Math.max(0, sy(y0) - top), fill: color, opacity: 0.75,
          }));
        }
      } else if (s.kind === "dots") {
        for (const [x, y] of s.points || []) {
          if (y === null) continue;
          plot.append(svg("circle", { cx: sx(x), cy: sy(y), r: 2.2, fill: color, opacity: 0.6 }));
        }
      } else {
        let d = "", pen = false;
        for (const [x, y] of s.points || []) {
          if (y === null) { pen = false; continue; }
          d += `${pen ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
          pen = true;
        }
        const attrs = { d, fill: "none", stroke: color, "stroke-width": s.width || 2 };
        if (s.dash) attrs["stroke-dasharray"] = s.dash;
        plot.append(svg("path", attrs));
      }
    }
    root.append(plot);
    for (const mk of o.markers || []) {
      if (mk.x === null || mk.x === undefined) continue;
      const x = sx(mk.x), color = mk.color || "#243047";
      root.append(svg("line", {
        x1: x, x2: x, y1: m.t, y2: m.t + ph, stroke: color, "stroke-width": 1.5,
        "stroke-dasharray": mk.dash || "5 3",
      }));
      if (mk.label) {
        const anchor = x > m.l + pw * 0.8 ? "end" : "start";
        root.append(svg("text", {
          class: "marker-label", x: x + (anchor === "end" ? -4 : 4), y: m.t + 12 + (mk.row || 0) * 13,
          "text-anchor": anchor, style: `fill:${color}`,
        }, mk.label));
      }
    }
    for (const p of o.points || []) {
      root.append(svg("circle", { cx: sx(p.x), cy: sy(p.y), r: 4.5, fill: "#fff", stroke: p.color || "#243047", "stroke-width": 2 }));
      if (p.label) {
        root.append(svg("text", { class: "marker-label", x: sx(p.x) + 7, y: sy(p.y) - 7, style: `fill:${p.color || "#243047"}` }, p.label));
      }
    }
    let lx = m.l;
    for (const s of o.series || []) {
      if (!s.label) continue;
      root.append(svg("rect", { x: lx, y: 8, width: 12, height: 10, fill: s.color || "#1f5fbf" }));
      const t = svg("text", { x: lx + 16, y: 17 }, s.label);
      root.append(t);
      lx += 26 + s.label.length * 6.4;
    }
    container.replaceChildren(root);
  }

  function watchBroker() {
    const badge = document.getElementById("broker-conn");
    if (!badge) return;
    poll(async () => {
      try {
        const h = await getJSON(window.FACEWIRE.urls.healthz);
        const ok = h.broker && h.broker.connected;
        badge.className = `conn ${ok ? "ok" : "bad"}`;
        badge.textContent = `broker ${h.broker.address || ""} ${ok ? "connected" : "disconnected"}`;
      } catch (e) {
        badge.className = "conn bad";
        badge.textContent = "monitor unreachable";
      }
    }, 5000);
  }

  document.addEventListener("DOMContentLoaded", watchBroker);

  return { el, svg, fmtTime, fmtDateTime, fmtAge, fmtNum, getJSON, poll, chart, niceTicks };
})();
