// A searchable list of traces (GET /traces): status, latency, tokens, time, deployment.
// flowport.traceList(container, {endpoint, requestId}) fills container; each row opens /studio/traces/{id}.
"use strict";

flowport.traceList = async (container, fixed) => {
  const { call, el } = flowport;
  const search = el("input", { id: "traces-search", type: "search", placeholder: "Request id",
    autocomplete: "off", value: fixed.requestId || "" });
  const status = el("select", { id: "traces-status" },
    el("option", { value: "" }, "Any"), el("option", { value: "Completed" }, "Completed"),
    el("option", { value: "Failed" }, "Failed"));
  const refresh = el("button", { type: "button" }, "Refresh");
  const note = el("p", { class: "muted", id: "traces-count", role: "status" });
  const body = el("tbody", {}, el("tr", {}, el("td", { colspan: 7, class: "muted" }, "Loading…")));
  const table = el("table", { class: "grid", id: "traces-table" },
    el("caption", { class: "sr-only" }, "Recent traces"),
    el("thead", {}, el("tr", {}, ["Time", "Request id", "Endpoint", "Deployment", "Status", "Latency",
      "Tokens"].map((h) => el("th", { scope: "col" }, h)))),
    body);

  function row(trace) {
    const link = el("a", { href: `/studio/traces/${trace.trace_id}` }, trace.request_id || trace.trace_id);
    const state = trace.status === "Failed" ? "failed" : "succeeded";
    return el("tr", {},
      el("td", {}, new Date(trace.start_time).toLocaleString()),
      el("td", {}, link),
      el("td", {}, trace.endpoint || ""),
      el("td", {}, trace.deployment || ""),
      el("td", {}, el("span", { class: `state ${state}` }, trace.status)),
      el("td", { class: "number" }, `${Math.round(trace.duration_ms * 10) / 10} ms`),
      el("td", { class: "number" }, String(trace.tokens.total)));
  }

  async function load() {
    const query = new URLSearchParams({ limit: "200" });
    if (fixed.endpoint) query.set("endpoint", fixed.endpoint);
    if (search.value.trim()) query.set("request_id", search.value.trim());
    if (status.value) query.set("status", status.value);
    try {
      const found = (await call("GET", `/traces?${query}`)).value;
      body.replaceChildren(...(found.length ? found.map(row)
        : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No traces yet: score the endpoint to see one."))]));
      note.textContent = `${found.length} trace${found.length === 1 ? "" : "s"} (every failed or slow request; the others up to a rate: 10 a second per process unless FLOWPORT_TRACE_RATE says otherwise)`;
    } catch (error) {
      note.textContent = `Could not read the traces: ${error.message}`;
    }
  }

  search.addEventListener("change", load);
  status.addEventListener("change", load);
  refresh.addEventListener("click", load);
  container.replaceChildren(
    el("div", { class: "logs-controls" },
      el("div", { class: "grow" }, el("label", { for: "traces-search" }, "Request id"), search),
      el("div", {}, el("label", { for: "traces-status" }, "Status"), status),
      el("div", {}, refresh)),
    note, table);
  await load();
};
