/* /threshold_stats/html: cards and three plots from /threshold_stats, polled. */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
  const CUR = "#243047", REC = "#2e8b46", EER = "#8e44ad";

  function render(s) {
    const missing = $("th-missing"), body = $("th-body"), badge = $("th-updated");
    if (!s.available) {
      missing.textContent = s.reason || "no threshold statistics yet";
      missing.hidden = false;
      body.hidden = true;
      badge.textContent = "waiting";
      return;
    }
    missing.hidden = true;
    body.hidden = false;
    badge.textContent = `updated ${FW.fmtTime(s.received_at)}`;
    const th = num(s.threshold);
    const cal = s.calibration && typeof s.calibration === "object" ? s.calibration : null;
    $("c-threshold").textContent = FW.fmtNum(th, 3);
    $("c-queries").textContent = s.queries === undefined || s.queries === null ? "—" : String(s.queries);
    $("c-eer").textContent = cal && num(cal.eer) !== null ? `${(cal.eer * 100).toFixed(2)} %` : "—";
    $("c-eer-th").textContent = cal ? FW.fmtNum(num(cal.eer_threshold), 3) : "—";
    $("c-rec").textContent = cal ? FW.fmtNum(num(cal.recommended_threshold), 3) : "—";
    const target = cal ? num(cal.target_fpir) ?? num(cal.target_far) : null;
    $("c-far").textContent = target !== null ? `${(target * 100).toFixed(2)} %` : "—";
    $("c-corrections").textContent = cal && num(cal.corrections) !== null ? String(cal.corrections) : "—";
    const SOURCES = { auto: "calibrated (auto)", default: "model default", fixed: "configured" };
    $("c-source").textContent = SOURCES[s.source] || "—";
    $("th-note").textContent = s.note ? `Threshold: ${s.note}.` : "";

    const markers = [{ x: th, label: `threshold ${FW.fmtNum(th, 3)}`, color: CUR }];
    if (cal && num(cal.recommended_threshold) !== null) {
      markers.push({ x: cal.recommended_threshold, label: `recommended ${FW.fmtNum(cal.recommended_threshold, 3)}`, color: REC, row: 1 });
    }

    const grid = Array.isArray(s.grid) ? s.grid.filter((g) => g && num(g.threshold) !== null) : [];
    grid.sort((a, b) => a.threshold - b.threshold);
    FW.chart($("chart-grid"), {
      xLabel: "threshold", yLabel: "queries",
      series: [
        { label: "named", color: "#2e8b46", points: grid.map((g) => [g.threshold, num(g.named)]) },
        { label: "unknown", color: "#b33a3a", points: grid.map((g) => [g.threshold, num(g.unknown)]) },
      ],
      markers, empty: "no live queries yet",
    });

    const h = s.histogram && typeof s.histogram === "object" ? s.histogram : {};
    const edges = Array.isArray(h.edges) ? h.edges : [];
    const counts = Array.isArray(h.counts) ? h.counts : [];
    const bars = [];
    for (let i = 0; i < counts.length && i + 1 < edges.length; i++) {
      if (num(edges[i]) !== null && num(edges[i + 1]) !== null && num(counts[i]) !== null) {
        bars.push([edges[i], edges[i + 1], counts[i]]);
      }
    }
    FW.chart($("chart-hist"), {
      xLabel: "top-1 cosine score", yLabel: "queries",
      series: [{ label: "top-1 score", color: "#1f5fbf", kind: "bars", bars }],
      markers: bars.length ? markers : [], empty: "no live queries yet",
    });

    const dist = cal && cal.histograms && typeof cal.histograms === "object" ? cal.histograms : null;
    const share = (counts) => {
      const edges = dist && Array.isArray(dist.edges) ? dist.edges : [];
      const total = (counts || []).reduce((a, c) => a + (num(c) || 0), 0);
      const out = [];
      for (let i = 0; total && i < counts.length && i + 1 < edges.length; i++) {
        out.push([(edges[i] + edges[i + 1]) / 2, (num(counts[i]) || 0) / total]);
      }
      return out;
    };
    const genuine = dist ? share(dist.genuine) : [], nonMated = dist ? share(dist.non_mated) : [];
    FW.chart($("chart-dist"), {
      xLabel: "cosine score", yLabel: "share of scores",
      series: [
        { label: "genuine (own person)", color: "#2e8b46", points: genuine },
        { label: "non-mated (best other person)", color: "#b33a3a", points: nonMated },
      ],
      markers: genuine.length ? markers : [],
      empty: "no calibration: the gallery is too small, so the model's default threshold is used",
    });

    const curve = cal && Array.isArray(cal.curve) ? cal.curve.filter((c) => c && num(c.threshold) !== null) : [];
    curve.sort((a, b) => a.threshold - b.threshold);
    const points = [];
    if (cal && num(cal.eer_threshold) !== null && num(cal.eer) !== null) {
      points.push({ x: cal.eer_threshold, y: cal.eer, label: `EER ${(cal.eer * 100).toFixed(2)} %`, color: EER });
    }
    FW.chart($("chart-cal"), {
      xLabel: "threshold", yLabel: "rate", yDomain: [0, 1],
      series: [
        { label: "FAR (impostor accepted)", color: "#b33a3a", points: curve.map((c) => [c.threshold, num(c.far)]) },
        { label: "FRR (genuine rejected)", color: "#1f5fbf", points: curve.map((c) => [c.threshold, num(c.frr)]) },
        { label: "FPIR (stranger named)", color: "#d68910", points: curve.filter((c) => num(c.fpir) !== null).map((c) => [c.threshold, c.fpir]) },
      ],
      markers: curve.length ? markers : [], points: curve.length ? points : [],
      empty: "no calibration: the classifier has not published one (gallery too small or not computed yet)",
    });
  }

  FW.poll(async () => render(await FW.getJSON(window.FACEWIRE.urls.thresholds)), 2000);
})();
