// The models page: every model version, its interface on demand, deploy and archive.
"use strict";
(() => {
  const { call, el, toast } = flowport;
  const body = document.querySelector("#models-table tbody");
  const archived = document.getElementById("show-archived");
  const count = document.getElementById("models-count");
  const problem = document.getElementById("models-error");

  const when = (iso) => (iso ? new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) : "–");
  const shortHash = (hash) => String(hash || "").replace(/^sha256:/, "").slice(0, 12);

  function pairs(object) {
    const entries = Object.entries(object || {});
    if (!entries.length) return el("p", { class: "muted" }, "none");
    return el("dl", {}, entries.flatMap(([key, value]) => [el("dt", {}, key),
      el("dd", {}, typeof value === "object" && value !== null ? JSON.stringify(value) : String(value))]));
  }

  function inputsList(inputs) {
    const entries = Object.entries(inputs || {});
    if (!entries.length) return el("p", { class: "muted" }, "none");
    return el("dl", {}, entries.flatMap(([name, spec]) => [el("dt", {}, name), el("dd", {},
      [spec.type, "default" in spec ? `default ${JSON.stringify(spec.default)}` : "required",
        spec.is_chat_input ? "chat input" : null, spec.is_chat_history ? "chat history" : null,
        spec.description || null].filter(Boolean).join(" · "))]));
  }

  function details(model, id) {
    const flow = model.flow || {};
    const outputs = Object.entries(flow.outputs || {});
    return el("tr", { class: "model-details", id, hidden: true }, el("td", { colspan: 7 }, el("div", { class: "detail-grid" },
      el("section", {}, el("h3", {}, "Inputs"), inputsList(flow.inputs)),
      el("section", {}, el("h3", {}, "Outputs"), outputs.length ? el("ul", {}, outputs.map(([name, spec]) =>
        el("li", {}, name, spec.is_chat_output ? " (chat output)" : "", spec.evaluation_only ? " (evaluation only)" : "")))
        : el("p", { class: "muted" }, "none")),
      el("section", {}, el("h3", {}, "Connections"), (flow.connections || []).length
        ? el("ul", {}, flow.connections.map((c) => el("li", {}, c))) : el("p", { class: "muted" }, "none")),
      el("section", {}, el("h3", {}, "Properties"), pairs(model.properties)),
      el("section", {}, el("h3", {}, "Tags"), pairs(model.tags)),
      el("section", {}, el("h3", {}, "Content hash"), el("code", {}, model.content_hash || "–")),
    )));
  }

  async function archive(model) {
    if (!confirm(`Archive ${model.name} version ${model.version}? Archived versions are hidden and cannot be deployed by name.`)) return;
    try {
      await call("POST", `/models/${encodeURIComponent(model.name)}/archive?version=${encodeURIComponent(model.version)}`);
      toast(`Archived ${model.name}:${model.version}`);
      await load();
    } catch (error) {
      problem.textContent = `Could not archive ${model.name}:${model.version}: ${error.message}`;
    }
  }

  async function load() {
    problem.textContent = "";
    let models;
    try {
      models = await call("GET", `/models?archived=${archived.checked}`);
    } catch (error) {
      problem.textContent = `Could not load the models: ${error.message}`;
      return;
    }
    models.sort((a, b) => a.name.localeCompare(b.name) || (Number(b.version) - Number(a.version)) || b.version.localeCompare(a.version));
    count.textContent = `${models.length} version${models.length === 1 ? "" : "s"}`;
    body.replaceChildren();
    if (!models.length) {
      body.append(el("tr", {}, el("td", { colspan: 7, class: "muted" },
        archived.checked ? "No models registered yet." : "No models yet (or all are archived). Register one with the CLI or POST /api/v1/models.")));
      return;
    }
    models.forEach((model, index) => {
      const id = `model-details-${index}`;
      const toggle = el("button", { type: "button", "aria-expanded": "false", "aria-controls": id,
        "aria-label": `Details of ${model.name} version ${model.version}` }, "Details");
      const row = el("tr", {},
        el("th", { scope: "row" }, model.name, model.archived ? el("span", { class: "badge" }, "archived") : null),
        el("td", {}, model.version),
        el("td", {}, model.flow_type || "–"),
        el("td", {}, model.description || el("span", { class: "muted" }, "–")),
        el("td", {}, el("time", { datetime: model.created_at }, when(model.created_at))),
        el("td", {}, el("code", { title: model.content_hash || "" }, shortHash(model.content_hash))),
        el("td", {}, el("div", { class: "row-actions" }, toggle,
          model.archived ? null : el("a", { class: "button", href: `/studio/deploy?model=${encodeURIComponent(model.id)}`,
            "aria-label": `Deploy ${model.name} version ${model.version}` }, "Deploy"),
          model.archived ? null : el("button", { type: "button", class: "danger",
            "aria-label": `Archive ${model.name} version ${model.version}`, onclick: () => archive(model) }, "Archive"))));
      const extra = details(model, id);
      toggle.addEventListener("click", () => {
        const open = toggle.getAttribute("aria-expanded") !== "true";
        toggle.setAttribute("aria-expanded", String(open));
        extra.hidden = !open;
      });
      body.append(row, extra);
    });
  }

  archived.addEventListener("change", load);
  load();
})();
