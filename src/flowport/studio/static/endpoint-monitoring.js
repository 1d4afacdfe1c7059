// The Monitoring tab: the last hour of each deployment (or all of them) as inline SVG charts,
// with headline numbers, a screen-reader table per chart, and a refresh every 10 s while visible.
"use strict";

flowport.chart = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 560, H = 200, LEFT = 48, RIGHT = 8, TOP = 10, BOTTOM = 26;

  // svg("rect", {x: 1}, child...) -> SVG element; text children are always text nodes.
  function svg(tag, attributes, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function short(value) {
    if (value >= 10000) return `${Math.round(value / 1000)}k`;
    if (value >= 1000) return `${(value / 1000).toFixed(1)}k`;
    return Number.isInteger(value) ? String(value) : value.toFixed(1);
  }

  // The frame: a labelled <svg role="img"> with gridlines, y labels and x labels.
  function frame(title, summary, max, xLabels, unit) {
    const id = `chart-${Math.random().toString(36).slice(2, 9)}`;
    const root = svg("svg", {
      viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart", "aria-labelledby": `${id}-t`, "aria-describedby": `${id}-d`,
      preserveAspectRatio: "none",
    }, svg("title", { id: `${id}-t` }, title), svg("desc", { id: `${id}-d` }, summary));
    const plotH = H - TOP - BOTTOM;
    for (const fraction of [0, 0.5, 1]) {
      const y = TOP + plotH * (1 - fraction);
      root.append(svg("line", { x1: LEFT, x2: W - RIGHT, y1: y, y2: y, class: "grid" }));
      root.append(svg("text", { x: LEFT - 6, y: y + 4, class: "axis", "text-anchor": "end" },
        short(max * fraction) + (fraction === 1 && unit ? unit : "")));
    }
    for (const [fraction, label, anchor] of xLabels) {
      root.append(svg("text", {
        x: LEFT + (W - LEFT - RIGHT) * fraction, y: H - 8, class: "axis", "text-anchor": anchor,
      }, label));
    }
    return root;
  }

  const plot = { x: (i, n) => LEFT + ((W - LEFT - RIGHT) * i) / n, w: (n) => (W - LEFT - RIGHT) / n,
    y: (v, max) => TOP + (H - TOP - BOTTOM) * (1 - v / max), h: (v, max) => ((H - TOP - BOTTOM) * v) / max };

  // Stacked bars: points [{label, values: {key: n}}]; series [{key, label, color}].
  function bars({ title, summary, points, series, xLabels, unit, format }) {
    const totals = points.map((p) => series.reduce((sum, s) => sum + (p.values[s.key] || 0), 0));
    const max = niceMax(Math.max(0, ...totals));
    const root = frame(title, summary, max, xLabels, unit);
    const n = points.length, width = plot.w(n);
    points.forEach((point, i) => {
      let base = 0;
      const parts = [];
      for (const s of series) {
        const value = point.values[s.key] || 0;
        if (!value) continue;
        parts.push(`${s.label} ${format ? format(value) : value}`);
        root.append(svg("rect", {
          x: plot.x(i, n) + 0.5, width: Math.max(1, width - 1), y: plot.y(base + value, max),
          height: plot.h(value, max), fill: s.color, class: "bar",
        }, svg("title", {}, `${point.label}: ${s.label} ${format ? format(value) : value}`)));
        base += value;
      }
    });
    return root;
  }

  // Lines: points [{label, values: {key: n | null}}]; a null breaks the line.
  function lines({ title, summary, points, series, xLabels, unit }) {
    const all = points.flatMap((p) => series.map((s) => p.values[s.key])).filter((v) => v !== null && v !== undefined);
    const max = niceMax(Math.max(0, ...all));
    const root = frame(title, summary, max, xLabels, unit);
    const n = points.length, width = plot.w(n);
    for (const s of series) {
      let d = "";
      let previous = false;
      points.forEach((point, i) => {
        const value = point.values[s.key];
        if (value === null || value === undefined) { previous = false; return; }
        const x = plot.x(i, n) + width / 2, y = plot.y(value, max);
        d += `${previous ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)} `;
        previous = true;
        root.append(svg("circle", { cx: x, cy: y, r: 2.5, fill: s.color },
          svg("title", {}, `${point.label}: ${s.label} ${short(value)}${unit || ""}`)));
      });
      if (d) root.append(svg("path", { d, stroke: s.color, fill: "none", "stroke-width": 2, class: s.dash ? "dash" : null }));
    }
    return root;
  }

  function legend(series) {
    return flowport.el("ul", { class: "legend", "aria-hidden": "true" }, series.map((s) =>
      flowport.el("li", {}, flowport.el("span", { class: "swatch", style: `background:${s.color}` }), s.label)));
  }

  return { svg, bars, lines, legend, short };
})();

flowport.tabs["monitoring"] = async (panel, page) => {
  const { call, el } = flowport;
  const { bars, lines, legend, short } = flowport.chart;
  const CLASSES = [
    { key: "2xx", label: "2xx", color: "#1a7f37" },
    { key: "3xx", label: "3xx", color: "#6e7781" },
    { key: "4xx", label: "4xx", color: "#bf8700" },
    { key: "5xx", label: "5xx", color: "#b42318" },
  ];
  const PERCENTILES = [
    { key: "p50", label: "p50", color: "#0b5cad" },
    { key: "p90", label: "p90", color: "#8250df" },
    { key: "p99", label: "p99", color: "#b42318" },
  ];
  const CODE_COLORS = ["#b42318", "#bf8700", "#8250df", "#cf222e", "#953800", "#6639ba", "#9a6700", "#57606a"];
  const TOKENS = [
    { key: "prompt", label: "prompt", color: "#0b5cad" },
    { key: "completion", label: "completion", color: "#1a7f37" },
  ];

  const select = el("select", { id: "monitor-deployment" });
  const updated = el("span", { class: "muted", "aria-live": "off" });
  const headline = el("dl", { class: "headline", "aria-live": "polite", id: "monitor-headline" });
  const charts = el("div", { class: "charts" });
  const outliers = el("div", { class: "outliers", id: "monitor-outliers" });
  const status = el("p", { class: "error", role: "alert" });
  panel.append(
    el("div", { class: "monitor-bar" },
      el("div", {}, el("label", { for: "monitor-deployment" }, "Deployment"), select),
      el("p", { class: "muted" }, "Last 60 minutes · refreshes every 10 s while this tab is open. ", updated)),
    status, headline, charts, outliers);

  let stats = null;
  let traces = null; // the endpoint's traces of the last hour (newest first), or an error text
  let deployments = {}; // name -> the deployment as shown (instances, scaling)
  const usage = {}; // deployment -> {tokens, history: [{t, prompt, completion}]}
  let chosen = "";

  function fillSelect(names) {
    const current = select.value || chosen;
    select.replaceChildren(el("option", { value: "" }, "All deployments"),
      ...names.map((name) => el("option", { value: name }, name)));
    select.value = names.includes(current) ? current : "";
    chosen = select.value;
  }
  select.addEventListener("change", () => { chosen = select.value; render(); });

  // The endpoint's current deployments: the stats still hold the minutes of deleted ones.
  async function deploymentNames() {
    const current = await call("GET", `/endpoints/${encodeURIComponent(page.name)}/deployments`);
    deployments = Object.fromEntries(current.map((d) => [d.name, d]));
    return current.map((d) => d.name).sort();
  }

  // One minute series for the chosen deployment(s): [{time, requests, total, latency}]
  function series() {
    const chosenNames = chosen ? [chosen] : Object.keys(stats.deployments || {});
    const lists = chosenNames.map((n) => stats.deployments[n]).filter(Boolean);
    if (!lists.length) return [];
    return lists[0].map((first, i) => {
      const requests = {};
      let total = 0, weight = 0;
      const latency = { p50: 0, p90: 0, p99: 0 };
      for (const list of lists) {
        const point = list[i] || {};
        total += point.total || 0;
        for (const [code, count] of Object.entries(point.requests || {})) requests[code] = (requests[code] || 0) + count;
        if (point.latency_ms && point.total) {
          weight += point.total;
          for (const key of Object.keys(latency)) latency[key] += (point.latency_ms[key] || 0) * point.total;
        }
      }
      for (const key of Object.keys(latency)) latency[key] = weight ? latency[key] / weight : null;
      return { time: first.time, requests, total, latency };
    });
  }

  const hhmm = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const errorsOf = (requests) => Object.entries(requests).reduce((sum, [c, n]) => sum + (Number(c) >= 400 ? n : 0), 0);
  const percent = (value) => `${value.toFixed(1)}%`;

  function figure(title, chart, legendSeries, table, note) {
    return el("figure", { class: "card chart-card" },
      el("figcaption", {}, el("h3", {}, title)), chart, legendSeries ? legend(legendSeries) : null,
      note ? el("p", { class: "muted small" }, note) : null, table);
  }

  // A visually hidden table of the minutes that had traffic (all 60 would be noise).
  function srTable(caption, headers, rows) {
    return el("table", { class: "sr-only" }, el("caption", {}, caption),
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.length ? rows.map((r) => el("tr", {}, r.map((c, i) => i ? el("td", {}, c) : el("th", { scope: "row" }, c))))
        : el("tr", {}, el("td", { colspan: headers.length }, "No requests in the last hour."))));
  }

  function render() {
    if (!stats) return;
    const points = series();
    const n = points.length;
    const xLabels = n ? [[0, hhmm(points[0].time), "start"], [0.5, hhmm(points[Math.floor(n / 2)].time), "middle"],
      [1, hhmm(points[n - 1].time), "end"]] : [];
    const scope = chosen ? `deployment ${chosen}` : "all deployments";

    // Headline: the last five minutes.
    const recent = points.slice(-5);
    const requests5 = recent.reduce((s, p) => s + p.total, 0);
    const errors5 = recent.reduce((s, p) => s + errorsOf(p.requests), 0);
    const p99s = recent.map((p) => p.latency.p99).filter((v) => v !== null);
    headline.replaceChildren(
      el("div", {}, el("dt", {}, "Last 5 minutes"), el("dd", {}, `${requests5} request${requests5 === 1 ? "" : "s"}`)),
      el("div", {}, el("dt", {}, "Error rate"), el("dd", {}, requests5 ? percent((100 * errors5) / requests5) : "–")),
      el("div", {}, el("dt", {}, "p99 latency"), el("dd", {}, p99s.length ? `${Math.round(Math.max(...p99s))} ms` : "–")),
      instancesHeadline(),
    );

    const busy = points.filter((p) => p.total);
    const hourTotal = points.reduce((s, p) => s + p.total, 0);
    const hourErrors = points.reduce((s, p) => s + errorsOf(p.requests), 0);

    // Requests per minute by status class.
    const classPoints = points.map((p) => {
      const values = {};
      for (const [code, count] of Object.entries(p.requests)) {
        const key = `${String(code)[0]}xx`;
        values[key] = (values[key] || 0) + count;
      }
      return { label: hhmm(p.time), values };
    });
    const usedClasses = CLASSES.filter((c) => classPoints.some((p) => p.values[c.key]));
    const requestsChart = bars({
      title: `Requests per minute, ${scope}`,
      summary: `${hourTotal} requests in the last hour, ${hourErrors} with status 400 or above.`,
      points: classPoints, series: CLASSES, xLabels,
    });

    // Latency percentiles.
    const latencyPoints = points.map((p) => ({ label: hhmm(p.time), values: p.latency }));
    const latencyChart = lines({
      title: `Latency percentiles in milliseconds, ${scope}`,
      summary: busy.length ? `Worst p99 in the hour: ${Math.round(Math.max(...busy.map((p) => p.latency.p99 || 0)))} ms.`
        : "No requests in the last hour.",
      points: latencyPoints, series: PERCENTILES, xLabels, unit: " ms",
    });

    // Error rate by status code.
    const codes = [...new Set(points.flatMap((p) => Object.keys(p.requests).filter((c) => Number(c) >= 400)))].sort();
    const codeSeries = codes.map((code, i) => ({ key: code, label: code, color: CODE_COLORS[i % CODE_COLORS.length] }));
    const errorPoints = points.map((p) => {
      const values = {};
      for (const code of codes) if (p.total && p.requests[code]) values[code] = (100 * p.requests[code]) / p.total;
      return { label: hhmm(p.time), values };
    });
    const errorChart = bars({
      title: `Error rate per minute by status code, ${scope}`,
      summary: hourTotal ? `${percent((100 * hourErrors) / hourTotal)} of requests in the last hour failed.`
        : "No requests in the last hour.",
      points: errorPoints, series: codeSeries, xLabels, unit: "%", format: percent,
    });

    charts.replaceChildren(
      figure("Requests per minute", requestsChart, usedClasses.length ? usedClasses : CLASSES,
        srTable(`Requests per minute, ${scope}`, ["Minute", "Total", "By status"],
          busy.map((p) => [hhmm(p.time), String(p.total),
            Object.entries(p.requests).map(([c, k]) => `${c}: ${k}`).join(", ")]))),
      figure("Latency (ms)", latencyChart, PERCENTILES,
        srTable(`Latency in milliseconds, ${scope}`, ["Minute", "p50", "p90", "p99"],
          busy.map((p) => [hhmm(p.time), ...["p50", "p90", "p99"].map((k) => p.latency[k] === null ? "–" : short(p.latency[k]))])),
        chosen || Object.keys(stats.deployments || {}).length < 2 ? null
          : "Across deployments: each minute's percentiles weighted by requests (approximate)."),
      figure("Error rate (status ≥ 400)", errorChart, codeSeries.length ? codeSeries : null,
        srTable(`Error rate per minute, ${scope}`, ["Minute", "Error rate", "By status code"],
          busy.map((p) => [hhmm(p.time), percent((100 * errorsOf(p.requests)) / p.total),
            codes.filter((c) => p.requests[c]).map((c) => `${c}: ${p.requests[c]}`).join(", ") || "none"])),
        codes.length ? null : "No errors in the last hour."),
      tokensFigure(scope),
    );
    renderOutliers();
  }

  // The slowest and the failed requests of the last hour (from the built-in trace store): each
  // request id opens its trace.
  const OUTLIERS = 5;
  function outlierTable(id, caption, rows, empty) {
    const body = rows.length ? rows.map((t) => el("tr", {},
      el("td", {}, new Date(t.start_time).toLocaleTimeString()),
      el("td", {}, el("a", { href: `/studio/traces/${t.trace_id}` }, t.request_id || t.trace_id)),
      el("td", {}, t.deployment || ""),
      el("td", {}, el("span", { class: `state ${t.status === "Failed" ? "failed" : "succeeded"}` }, t.status)),
      el("td", { class: "number" }, `${short(Math.round(t.duration_ms))} ms`)))
      : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, empty))];
    return el("section", { class: "card chart-card", "aria-labelledby": `${id}-title` },
      el("h3", { id: `${id}-title` }, caption),
      el("table", { class: "grid compact", id },
        el("thead", {}, el("tr", {}, ["Time", "Request id", "Deployment", "Status", "Latency"]
          .map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, body)));
  }
  function renderOutliers() {
    if (traces === null) return;
    if (typeof traces === "string") {
      outliers.replaceChildren(el("p", { class: "muted" }, traces));
      return;
    }
    const shown = chosen ? traces.filter((t) => t.deployment === chosen) : traces;
    const slowest = [...shown].sort((a, b) => b.duration_ms - a.duration_ms).slice(0, OUTLIERS);
    const failed = shown.filter((t) => t.status === "Failed").slice(0, OUTLIERS);
    outliers.replaceChildren(
      el("h2", {}, "Outliers"),
      el("p", { class: "muted small" }, `The last hour's traces (up to ${TRACE_LIMIT} newest); a request id opens its trace.`),
      el("div", { class: "charts" },
        outlierTable("monitor-slowest", "Slowest requests", slowest, "No traced requests in the last hour."),
        outlierTable("monitor-failed", "Failed requests", failed, "No failed requests in the last hour.")));
  }
  const TRACE_LIMIT = 500;
  async function loadTraces() {
    const since = new Date(Date.now() - 3600 * 1000).toISOString();
    const query = new URLSearchParams({ endpoint: page.name, since, limit: String(TRACE_LIMIT) });
    try {
      traces = (await call("GET", `/traces?${query}`)).value;
    } catch (error) {
      traces = `Could not read the traces: ${error.message}`;
    }
  }

  // Ready instances now; for one autoscaled deployment its bounds and its last change.
  function instancesHeadline() {
    const shown = (chosen ? [chosen] : Object.keys(deployments)).map((n) => deployments[n]).filter(Boolean);
    const ready = shown.reduce((sum, d) => sum + (d.instances || []).filter((i) => i.ready).length, 0);
    const scaling = shown.length === 1 ? shown[0].scaling : null;
    const last = scaling && scaling.last_scaling;
    return el("div", { id: "monitor-instances" }, el("dt", {}, "Instances"),
      el("dd", {}, `${ready} ready`),
      scaling ? el("dd", { class: "muted small" }, `autoscaled ${scaling.min_instances} to ${scaling.max_instances}` +
        (last ? `; last ${last.from_instances} → ${last.to_instances} at ${new Date(last.time).toLocaleTimeString()}` : "")) : null);
  }

  function tokensFigure(scope) {
    const names = chosen ? [chosen] : Object.keys(usage).sort();
    const known = names.filter((n) => usage[n] && usage[n].tokens);
    const sum = (key) => known.reduce((s, n) => s + (usage[n].tokens[key] || 0), 0);
    const table = el("table", { class: "grid compact" },
      el("caption", { class: "sr-only" }, `Tokens since the instances started, ${scope}`),
      el("thead", {}, el("tr", {}, ["Deployment", "Instances", "Prompt", "Completion", "Tokens/min"].map((h) =>
        el("th", { scope: "col" }, h)))),
      el("tbody", {}, known.length ? known.map((n) => el("tr", {},
        el("th", { scope: "row" }, n), el("td", { class: "number" }, String(usage[n].instances)),
        el("td", { class: "number" }, String(usage[n].tokens.prompt || 0)),
        el("td", { class: "number" }, String(usage[n].tokens.completion || 0)),
        el("td", { class: "number" }, rateText(usage[n].history))))
        : el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No token usage reported yet."))),
      known.length > 1 ? el("tfoot", {}, el("tr", {}, el("th", { scope: "row" }, "Total"), el("td", {}),
        el("td", { class: "number" }, String(sum("prompt"))), el("td", { class: "number" }, String(sum("completion"))),
        el("td", {}))) : null);

    // Tokens per minute between successive polls while the page is open.
    const rates = [];
    const times = new Set();
    for (const n of known) for (const h of usage[n].history) times.add(h.t);
    const sorted = [...times].sort((a, b) => a - b);
    for (let i = 1; i < sorted.length; i++) {
      const values = { prompt: 0, completion: 0 };
      let any = false;
      for (const n of known) {
        const history = usage[n].history;
        const at = history.findIndex((h) => h.t === sorted[i]);
        if (at < 1) continue;
        const a = history[at - 1], b = history[at];
        const minutes = (b.t - a.t) / 60000;
        if (minutes <= 0 || b.prompt < a.prompt || b.completion < a.completion) continue; // instances restarted
        values.prompt += (b.prompt - a.prompt) / minutes;
        values.completion += (b.completion - a.completion) / minutes;
        any = true;
      }
      if (any) rates.push({ label: new Date(sorted[i]).toLocaleTimeString(), values });
    }
    const chart = rates.length ? flowport.chart.lines({
      title: `Tokens per minute while this page is open, ${scope}`,
      summary: `Latest: ${short(rates.at(-1).values.prompt)} prompt and ${short(rates.at(-1).values.completion)} completion tokens per minute.`,
      points: rates, series: TOKENS, xLabels: [[0, rates[0].label, "start"], [1, rates.at(-1).label, "end"]],
    }) : el("p", { class: "muted" }, "Tokens per minute appear after the next refresh.");
    return figure("Tokens", el("div", {}, table, chart), rates.length ? TOKENS : null, null,
      "Totals are cumulative since the deployment's instances started.");
  }

  function rateText(history) {
    if (history.length < 2) return "–";
    const a = history.at(-2), b = history.at(-1);
    const minutes = (b.t - a.t) / 60000;
    if (minutes <= 0 || b.prompt < a.prompt || b.completion < a.completion) return "–";
    return short((b.prompt - a.prompt + b.completion - a.completion) / minutes);
  }

  async function refresh() {
    try {
      stats = await call("GET", `/endpoints/${encodeURIComponent(page.name)}/stats`);
      const names = await deploymentNames();
      fillSelect(names);
      for (const name of Object.keys(usage)) if (!names.includes(name)) delete usage[name];
      const now = Date.now();
      await Promise.all(names.map(async (name) => {
        try {
          const got = await call("GET", `/endpoints/${encodeURIComponent(page.name)}/deployments/${encodeURIComponent(name)}/usage`);
          const entry = usage[name] || (usage[name] = { history: [] });
          entry.instances = got.instances;
          entry.tokens = got.tokens || {};
          entry.history.push({ t: now, prompt: entry.tokens.prompt || 0, completion: entry.tokens.completion || 0 });
          if (entry.history.length > 60) entry.history.shift();
        } catch (error) {
          if (error.status !== 404) throw error;
        }
      }));
      await loadTraces();
      status.textContent = "";
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
      render();
    } catch (error) {
      status.textContent = `Could not load the monitoring data: ${error.message}`;
    }
  }

  await refresh();
  const timer = setInterval(() => {
    if (!document.body.contains(panel)) return clearInterval(timer);
    if (!panel.hidden && document.visibilityState === "visible") refresh();
  }, 10000);
  new MutationObserver(() => { if (!panel.hidden) refresh(); })
    .observe(panel, { attributes: true, attributeFilter: ["hidden"] });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && !panel.hidden) refresh();
  });
};
