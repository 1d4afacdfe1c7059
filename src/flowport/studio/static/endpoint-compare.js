// Compare tab: two deployments' answers to the same mirrored requests, as the gateway recorded
// them: agreement (exact and per output field), latency p50/p95 of each side, tokens, and the
// differing pairs with both answers.
"use strict";

flowport.tabs["compare"] = async (panel, page) => {
  const { call, el } = flowport;
  const names = page.deployments.map((d) => d.name);
  if (names.length < 2) {
    panel.replaceChildren(el("p", { class: "muted" },
      "Compare needs two deployments: one serving traffic, the other in mirror_traffic."));
    return;
  }
  const traffic = page.endpoint.traffic || {};
  const mirror = page.endpoint.mirror_traffic || {};
  const first = names.find((n) => traffic[n] > 0) || names[0];
  const second = names.find((n) => mirror[n] > 0 && n !== first) || names.find((n) => n !== first);
  const pick = (id, chosen) => el("select", { id },
    names.map((n) => el("option", { value: n, selected: n === chosen }, n)));
  const a = pick("compare-a", first);
  const b = pick("compare-b", second);
  const refresh = el("button", { type: "button" }, "Refresh");
  const status = el("p", { class: "muted", id: "compare-status", role: "status" });
  const result = el("div", { id: "compare-result" });

  const percent = (rate) => (rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(1)}%`);
  const ms = (value) => (value === null || value === undefined ? "–" : `${value} ms`);
  const signed = (value, unit) => (value === null || value === undefined ? "–" : `${value > 0 ? "+" : ""}${value}${unit}`);
  const text = (value) => (typeof value === "string" ? value : JSON.stringify(value, null, 1));

  function table(caption, headers, rows, id) {
    return el("table", { class: "grid", id },
      el("caption", { class: "sr-only" }, caption),
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.map((row) => el("tr", {}, row.map((cell, i) =>
        i === 0 ? el("th", { scope: "row" }, cell) : el("td", {}, cell))))));
  }

  function render(report) {
    const [x, y] = report.deployments;
    if (!report.pairs) {
      result.replaceChildren(el("p", { class: "muted" },
        `No recorded pairs of ${x} and ${y} yet: send traffic to one with the other in mirror_traffic.`));
      return;
    }
    const lat = report.latency_ms;
    const parts = [
      el("p", { id: "compare-agreement", class: "rate" },
        `Agreement ${percent(report.agreement_rate)}: ${report.agreed} of ${report.pairs} answers identical`),
      table("Agreement per output field", ["Output field", "Agreement"],
        Object.entries(report.field_agreement).map(([f, r]) => [f, percent(r)]), "compare-fields"),
      table("Latency of each deployment", ["Latency", x, y, "Delta"],
        ["p50", "p95"].map((q) => [q, ms(lat[x][q]), ms(lat[y][q]), signed(lat.delta[q], " ms")]), "compare-latency"),
    ];
    if (report.tokens) {
      const t = report.tokens;
      parts.push(table("Tokens per request", ["Tokens", x, y, "Delta"],
        [["mean per request", t[x].mean, t[y].mean, signed(t.delta.mean, "")]], "compare-tokens"));
    }
    parts.push(el("h3", {}, `Differing pairs (${report.differing_count})`));
    if (!report.differing.length) parts.push(el("p", { class: "muted" }, "Every recorded pair agrees."));
    const list = el("ol", { id: "compare-differing", class: "pairs" });
    for (const pair of report.differing) {
      list.append(el("li", {},
        el("p", {}, el("code", {}, pair.request_id),
          pair.fields.length ? ` · differs in ${pair.fields.join(", ")}` : ""),
        el("p", { class: "muted" }, "Request"), el("pre", { class: "answer" }, text(pair.request)),
        el("div", { class: "pair" },
          [x, y].map((side) => el("div", {},
            el("p", { class: "muted" }, `${side} · ${pair[side].status} · ${pair[side].latency_ms} ms`),
            el("pre", { class: "answer" }, text(pair[side].answer)))))));
    }
    parts.push(list);
    result.replaceChildren(...parts);
  }

  async function load() {
    if (a.value === b.value) {
      status.textContent = "Pick two different deployments.";
      return;
    }
    status.textContent = "Loading…";
    try {
      const query = new URLSearchParams([["deployments", a.value], ["deployments", b.value]]);
      const report = await call("GET", `/endpoints/${page.name}/compare?${query}`);
      render(report);
      status.textContent = `${report.pairs} recorded pairs`;
    } catch (error) {
      status.textContent = `Could not compare: ${error.message}`;
    }
  }

  a.addEventListener("change", load);
  b.addEventListener("change", load);
  refresh.addEventListener("click", load);
  panel.replaceChildren(
    el("section", { class: "card", "aria-labelledby": "compare-title" },
      el("h2", { id: "compare-title" }, "Compare"),
      el("p", { class: "muted" }, "Answers of two deployments to the same mirrored requests (the most recent " +
        "pairs the gateway kept; secrets scrubbed)."),
      el("div", { class: "logs-controls" },
        el("div", {}, el("label", { for: "compare-a" }, "Deployment"), a),
        el("div", {}, el("label", { for: "compare-b" }, "Compared with"), b),
        el("div", {}, refresh)),
      status, result));
  await load();
};
