// Details tab: URIs, deployments, the editable traffic split and the provisioning history.
"use strict";

flowport.tabs["details"] = async (panel, page) => {
  const { call, el, toast } = flowport;

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return isNaN(date) ? iso : date.toLocaleString();
  }

  function errorText(error) {
    if (!error) return "";
    if (typeof error === "string") return error;
    return error.message || error.reason || JSON.stringify(error);
  }

  // An error as its first line, the rest (log tail, traceback) folded away in a scrolling box.
  function errorBlock(error) {
    if (!error) return null;
    const lines = [errorText(error), ...(error.log_tail || [])].join("\n").split("\n");
    const first = lines.find((line) => line.trim()) || "";
    const short = first.length > 200 ? `${first.slice(0, 200)}…` : first;
    const rest = lines.join("\n").trim();
    return el("div", { class: "error error-block" },
      el("p", { class: "error-line" }, short),
      rest !== first.trim() ? el("details", {}, el("summary", {}, "Details"),
        el("pre", { class: "error-details", tabindex: "0" }, rest)) : null);
  }

  async function render() {
    const endpoint = page.endpoint;
    const deployments = page.deployments;
    const operations = await call("GET", `/endpoints/${page.name}/operations`).catch(() => []);

    const uris = el("section", { class: "card", "aria-labelledby": "details-uris" },
      el("h2", { id: "details-uris" }, "Endpoint"),
      el("dl", { class: "facts" },
        el("dt", {}, "Authentication"), el("dd", {}, endpoint.auth_mode),
        el("dt", {}, "Provisioning state"), el("dd", {}, endpoint.provisioning_state || ""),
        endpoint.description ? [el("dt", {}, "Description"), el("dd", {}, endpoint.description)] : null),
      flowport.copyField("Scoring URI", endpoint.scoring_uri || "", "details-scoring-uri"),
      flowport.copyField("OpenAPI URI", endpoint.openapi_uri || "", "details-openapi-uri"));

    const rows = deployments.map((d) => {
      const instances = d.instances || [];
      const ready = instances.filter((i) => i.ready).length;
      const failed = d.provisioning_state === "Failed";
      return el("tr", {},
        el("th", { scope: "row" }, d.name),
        el("td", {},
          el("span", { class: `state ${String(d.provisioning_state).toLowerCase()}` }, d.provisioning_state),
          failed ? errorBlock(d.error) : null),
        el("td", { class: "number" }, d.scaling
          ? `${d.scaling.current_instances} (autoscaled ${d.scaling.min_instances} to ${d.scaling.max_instances})`
          : d.instance_count),
        el("td", { class: "number" }, `${ready} / ${instances.length}`),
        el("td", {}, el("code", {}, d.model || "")),
        el("td", { class: "number" }, `${(endpoint.traffic || {})[d.name] || 0}%`));
    });
    const table = el("section", { class: "card", "aria-labelledby": "details-deployments" },
      el("h2", { id: "details-deployments" }, "Deployments"),
      deployments.length
        ? el("table", { class: "grid", id: "deployments-table" },
          el("thead", {}, el("tr", {},
            ["Name", "State", "Instances", "Ready", "Model", "Traffic"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, rows))
        : el("p", { class: "muted" }, "No deployments yet."));

    panel.replaceChildren(uris, table, trafficForm(endpoint, deployments), history(operations));
  }

  function trafficForm(endpoint, deployments) {
    const error = el("p", { class: "error", role: "alert", id: "traffic-error" });
    const inputs = { traffic: {}, mirror: {} };
    const field = (kind, name, value, label) => {
      const id = `${kind}-${name}`;
      const input = el("input", { id, type: "number", min: 0, max: 100, step: 1, value: value || 0,
        inputmode: "numeric" });
      inputs[kind][name] = input;
      return el("div", { class: "traffic-field" }, el("label", { for: id }, label), input);
    };
    const live = deployments.map((d) =>
      field("traffic", d.name, (endpoint.traffic || {})[d.name], `Traffic for ${d.name} (%)`));
    const mirror = deployments.map((d) =>
      field("mirror", d.name, (endpoint.mirror_traffic || {})[d.name], `Mirror traffic for ${d.name} (%)`));
    const save = el("button", { type: "submit", class: "primary" }, "Save traffic");
    const total = el("span", { class: "muted", id: "traffic-total", "aria-live": "polite" });
    const sum = () => {
      const n = Object.values(inputs.traffic).reduce((a, i) => a + (Number(i.value) || 0), 0);
      total.textContent = `Total: ${n}%`;
    };
    sum();

    const form = el("form", { class: "card", "aria-labelledby": "details-traffic", novalidate: true,
      oninput: sum,
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = "";
        const read = (group) => Object.fromEntries(Object.entries(group)
          .map(([name, input]) => [name, Math.round(Number(input.value) || 0)])
          .filter(([, share]) => share > 0));
        save.disabled = true;
        try {
          const body = await call("PUT", `/endpoints/${page.name}/traffic`,
            { traffic: read(inputs.traffic), mirror_traffic: read(inputs.mirror) });
          if (body && body.operation && body.operation.status === "Running") {
            const done = await flowport.follow(body.operation);
            if (done.status !== "Succeeded") throw new Error(errorText(done.error) || done.status);
          }
          toast("Traffic saved");
          await page.reload();
          await render();
        } catch (e) {
          error.textContent = e.message;
        } finally {
          save.disabled = false;
        }
      } },
      el("h2", { id: "details-traffic" }, "Traffic"),
      deployments.length ? [
        el("fieldset", {}, el("legend", {}, "Live traffic"), el("div", { class: "traffic-grid" }, live), total),
        el("fieldset", {}, el("legend", {}, "Mirror traffic"),
          el("p", { class: "hint" }, "A copy of live requests, to one deployment without live traffic (at most 50%)."),
          el("div", { class: "traffic-grid" }, mirror)),
        error,
        el("div", { class: "actions" }, save),
      ] : el("p", { class: "muted" }, "Deploy a model to split traffic."));
    return form;
  }

  function history(operations) {
    const sorted = [...operations].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    return el("section", { class: "card", "aria-labelledby": "details-history" },
      el("h2", { id: "details-history" }, "Provisioning history"),
      sorted.length
        ? el("table", { class: "grid", id: "operations-table" },
          el("thead", {}, el("tr", {}, ["Kind", "Target", "Status", "Time", "Error"].map((h) =>
            el("th", { scope: "col" }, h)))),
          el("tbody", {}, sorted.map((op) => el("tr", {},
            el("td", {}, op.kind, op.to_instances ? ` ${op.from_instances} → ${op.to_instances}` : ""),
            el("td", {}, op.target),
            el("td", {}, el("span", { class: `state ${String(op.status).toLowerCase()}` }, op.status)),
            el("td", {}, el("time", { datetime: op.created_at }, when(op.created_at))),
            el("td", {}, errorBlock(op.error))))))
        : el("p", { class: "muted" }, "No operations yet."));
  }

  await render();
};
