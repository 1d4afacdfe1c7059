// Logs tab: a deployment's instance logs, filtered client-side; Follow polls every 2 s while visible.
// A line's request id links to that request's trace.
"use strict";

flowport.tabs["logs"] = async (panel, page) => {
  const { call, el } = flowport;
  if (!page.deployments.length) {
    panel.replaceChildren(el("p", { class: "muted" }, "No deployments yet: deploy a model to see its logs."));
    return;
  }
  let lines = [];
  let timer = null;
  let loading = false;

  const deployment = el("select", { id: "logs-deployment" },
    page.deployments.map((d) => el("option", { value: d.name }, d.name)));
  const count = el("input", { id: "logs-lines", type: "number", min: 1, max: 10000, step: 1, value: 200 });
  const filter = el("input", { id: "logs-filter", type: "search", placeholder: "Text to find",
    autocomplete: "off" });
  const follow = el("input", { id: "logs-follow", type: "checkbox" });
  const refresh = el("button", { type: "button" }, "Refresh");
  const status = el("p", { class: "muted", id: "logs-status", role: "status" });
  const output = el("pre", { id: "logs-output", class: "logs", role: "log", "aria-live": "polite",
    "aria-label": "Deployment logs", tabindex: 0 });

  const REQUEST_ID = /("request_id":\s*")([^"\\]+)"/;
  function appendLine(into, line) {
    const found = REQUEST_ID.exec(line);
    if (!found) {
      into.append(line);
      return;
    }
    const at = found.index + found[1].length;
    into.append(line.slice(0, at),
      el("a", { href: `/studio/traces?request_id=${encodeURIComponent(found[2])}`, title: "Open this request's trace" }, found[2]),
      line.slice(at + found[2].length));
  }

  function show() {
    const needle = filter.value.trim().toLowerCase();
    const kept = needle ? lines.filter((line) => line.toLowerCase().includes(needle)) : lines;
    const atBottom = output.scrollHeight - output.scrollTop - output.clientHeight < 24;
    if (kept.length) {
      const text = document.createDocumentFragment();
      kept.forEach((line, i) => { if (i) text.append("\n"); appendLine(text, line); });
      output.replaceChildren(text);
    } else {
      output.textContent = lines.length ? "No line matches the filter." : "No log lines yet.";
    }
    if (atBottom || !output.dataset.loaded) output.scrollTop = output.scrollHeight;
    output.dataset.loaded = "1";
    status.textContent = needle ? `${kept.length} of ${lines.length} lines` : `${lines.length} lines`;
  }

  async function load() {
    if (loading) return;
    loading = true;
    const n = Math.max(1, Math.min(10000, Math.round(Number(count.value) || 200)));
    try {
      const body = await call("GET",
        `/endpoints/${page.name}/deployments/${encodeURIComponent(deployment.value)}/logs?lines=${n}`);
      lines = body.lines || [];
      show();
    } catch (error) {
      status.textContent = `Could not read the logs: ${error.message}`;
    } finally {
      loading = false;
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (!follow.checked) return;
    timer = setTimeout(async () => {
      if (follow.checked && !panel.hidden && document.visibilityState === "visible") await load();
      schedule();
    }, 2000);
  }

  deployment.addEventListener("change", load);
  count.addEventListener("change", load);
  filter.addEventListener("input", show);
  refresh.addEventListener("click", load);
  follow.addEventListener("change", () => { if (follow.checked) load(); schedule(); });

  panel.replaceChildren(
    el("section", { class: "card", "aria-labelledby": "logs-title" },
      el("h2", { id: "logs-title" }, "Logs"),
      el("div", { class: "logs-controls" },
        el("div", {}, el("label", { for: "logs-deployment" }, "Deployment"), deployment),
        el("div", {}, el("label", { for: "logs-lines" }, "Lines"), count),
        el("div", { class: "grow" }, el("label", { for: "logs-filter" }, "Filter"), filter),
        el("div", { class: "check" }, follow, el("label", { for: "logs-follow" }, "Follow")),
        el("div", {}, refresh)),
      status, output));
  await load();
};
