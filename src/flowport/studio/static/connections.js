// The connections page: list (secrets only ever as "stored"), new/edit forms by type, delete.
"use strict";
(() => {
  const { call, el, toast } = flowport;
  const TYPES = {
    open_ai: { label: "OpenAI", fields: [
      { name: "api_key", label: "API key", secret: true, required: true },
      { name: "base_url", label: "Base URL", hint: "optional, e.g. https://api.openai.com/v1" },
      { name: "organization", label: "Organization", hint: "optional" }] },
    azure_open_ai: { label: "Azure OpenAI", fields: [
      { name: "api_key", label: "API key", secret: true, required: true },
      { name: "api_base", label: "API base", required: true, hint: "https://<resource>.openai.azure.com/" },
      { name: "api_type", label: "API type", placeholder: "azure" },
      { name: "api_version", label: "API version", placeholder: "2024-02-01" }] },
    serverless: { label: "Serverless", fields: [
      { name: "api_key", label: "API key", secret: true, required: true },
      { name: "api_base", label: "API base", required: true }] },
    custom: { label: "Custom", fields: [] },
  };
  const SCRUBBED = /^\*+$/;
  const KEEP = "leave empty to keep the stored value";

  const body = document.querySelector("#connections-table tbody");
  const problem = document.getElementById("connections-error");
  const editor = document.getElementById("connection-editor");
  const title = document.getElementById("connection-form-title");
  const form = document.getElementById("connection-form");
  let connections = [];

  const secretNames = (c) => c.type === "custom" ? Object.keys(c.secrets || {})
    : (TYPES[c.type] ? TYPES[c.type].fields.filter((f) => f.secret).map((f) => f.name)
      : Object.keys(c).filter((k) => SCRUBBED.test(String(c[k]))));
  const settingsOf = (c) => {
    if (c.type === "custom") return Object.entries(c.configs || {});
    const secret = new Set(secretNames(c));
    return Object.entries(c).filter(([k, v]) => !["name", "type", "module"].includes(k) && !secret.has(k) && v !== null && v !== "");
  };
  // A secret's state, never its value: the API scrubs it, and this never shows even that.
  const secretState = (c, key) => {
    const value = c.type === "custom" ? (c.secrets || {})[key] : c[key];
    return value ? "stored" : "not set";
  };

  function render() {
    body.replaceChildren();
    if (!connections.length) {
      body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No connections yet. Flows that name a connection need one with that name.")));
      return;
    }
    for (const c of connections) {
      const settings = settingsOf(c);
      const secrets = secretNames(c);
      body.append(el("tr", {},
        el("th", { scope: "row" }, c.name),
        el("td", {}, TYPES[c.type] ? TYPES[c.type].label : c.type),
        el("td", {}, settings.length ? el("dl", { class: "fields" }, settings.flatMap(([k, v]) =>
          [el("dt", {}, k), el("dd", {}, typeof v === "object" ? JSON.stringify(v) : String(v))])) : el("span", { class: "muted" }, "–")),
        el("td", {}, secrets.length ? el("dl", { class: "fields" }, secrets.flatMap((k) => {
          const state = secretState(c, k);
          return [el("dt", {}, k), el("dd", { class: state === "stored" ? "stored" : "muted" }, state)];
        })) : el("span", { class: "muted" }, "–")),
        el("td", {}, el("div", { class: "row-actions" },
          el("button", { type: "button", "aria-label": `Edit ${c.name}`, onclick: () => open(c) }, "Edit"),
          el("button", { type: "button", class: "danger", "aria-label": `Delete ${c.name}`, onclick: () => remove(c) }, "Delete")))));
    }
  }

  async function load() {
    try {
      connections = (await call("GET", "/connections")).sort((a, b) => a.name.localeCompare(b.name));
      render();
    } catch (error) {
      problem.textContent = `Could not load the connections: ${error.message}`;
    }
  }

  async function remove(c) {
    if (!confirm(`Delete connection ${c.name}? Deployments that use it will fail to start.`)) return;
    try {
      await call("DELETE", `/connections/${encodeURIComponent(c.name)}`);
      toast(`Deleted ${c.name}`);
      if (form.dataset.editing === c.name) close();
      await load();
    } catch (error) {
      problem.textContent = `Could not delete ${c.name}: ${error.message}`;
    }
  }

  function field(id, label, input, hint) {
    const hintId = hint ? `${id}-hint` : null;
    if (hintId) input.setAttribute("aria-describedby", hintId);
    return el("div", {}, el("label", { for: id }, label), input, hint ? el("div", { class: "hint", id: hintId }, hint) : null);
  }

  const lines = (object) => Object.keys(object || {}).map((k) => `${k}=${object[k] ?? ""}`).join("\n");
  function parseLines(text, what) {
    const result = {};
    for (const [index, raw] of text.split("\n").entries()) {
      const line = raw.trim();
      if (!line || line.startsWith("#")) continue;
      const at = line.indexOf("=");
      if (at < 1) throw new Error(`${what}, line ${index + 1}: write key=value`);
      result[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    return result;
  }

  function open(existing) {
    const editing = Boolean(existing);
    problem.textContent = "";
    form.dataset.editing = editing ? existing.name : "";
    title.textContent = editing ? `Edit connection ${existing.name}` : "New connection";
    const name = el("input", { id: "connection-name", name: "name", required: true, autocomplete: "off",
      pattern: "[A-Za-z0-9_.\\-]+", value: editing ? existing.name : "", readonly: editing });
    const type = el("select", { id: "connection-type", name: "type", disabled: editing },
      ...Object.entries(TYPES).map(([key, t]) => el("option", { value: key }, t.label)));
    type.value = editing ? existing.type : "open_ai";
    const fields = el("fieldset", {});
    const error = el("p", { class: "error", id: "connection-form-error", role: "alert" });

    function drawFields() {
      const kind = TYPES[type.value];
      fields.replaceChildren(el("legend", {}, `${kind.label} settings`));
      if (type.value === "custom") {
        fields.append(
          field("connection-configs", "Configs", el("textarea", { id: "connection-configs", class: "code", name: "configs",
            spellcheck: "false" }, editing ? lines(existing.configs) : ""), "one key=value per line"),
          field("connection-secrets", "Secrets", el("textarea", { id: "connection-secrets", class: "code", name: "secrets",
            spellcheck: "false", autocomplete: "off" },
          editing ? Object.keys(existing.secrets || {}).map((k) => `${k}=`).join("\n") : ""),
          editing ? `one key=value per line; ${KEEP}: key= keeps the stored secret` : "one key=value per line"));
        return;
      }
      for (const f of kind.fields) {
        const id = `connection-${f.name}`;
        const current = editing && !f.secret ? existing[f.name] ?? "" : "";
        const stored = editing && f.secret && existing[f.name];
        const input = el("input", { id, name: f.name, type: f.secret ? "password" : "text", autocomplete: f.secret ? "new-password" : "off",
          value: current, placeholder: f.placeholder, required: f.required && !stored });
        const hint = f.secret && stored ? `stored; ${KEEP}` : f.hint || (f.required ? "required" : null);
        fields.append(field(id, f.label, input, hint));
      }
    }
    type.addEventListener("change", drawFields);
    drawFields();

    form.replaceChildren(
      field("connection-name", "Name", name, editing ? "a connection's name cannot change" : "letters, digits, _ . -"),
      field("connection-type", "Type", type, null),
      fields, error,
      el("div", { class: "buttons" }, el("button", { type: "submit", class: "primary" }, editing ? "Save changes" : "Create connection"),
        el("button", { type: "button", onclick: close }, "Cancel")));
    form.onsubmit = async (event) => {
      event.preventDefault();
      error.textContent = "";
      const connectionName = name.value.trim();
      try {
        if (!/^[A-Za-z0-9_.-]+$/.test(connectionName)) throw new Error("Name: use letters, digits, _ . and - only");
        const spec = { type: type.value };
        if (type.value === "custom") {
          spec.configs = parseLines(form.elements.configs.value, "Configs");
          spec.secrets = Object.fromEntries(Object.entries(parseLines(form.elements.secrets.value, "Secrets"))
            .filter(([, v]) => v !== "")); // left out: the stored value stays
        } else {
          for (const f of TYPES[type.value].fields) {
            const value = form.elements[f.name].value.trim();
            if (f.secret && !value) {
              if (editing && existing[f.name]) continue; // left out: the stored value stays
              if (f.required) throw new Error(`${f.label} is required`);
            }
            if (value || (editing && !f.secret)) spec[f.name] = value || null;
            else if (f.required) throw new Error(`${f.label} is required`);
          }
        }
        if (!editing && connections.some((c) => c.name === connectionName)) {
          throw new Error(`A connection named ${connectionName} already exists; edit it instead`);
        }
        await call("PUT", `/connections/${encodeURIComponent(connectionName)}`, spec);
        toast(editing ? `Saved ${connectionName}` : `Created ${connectionName}`);
        close();
        await load();
      } catch (failure) {
        error.textContent = failure.message;
      }
    };
    editor.hidden = false;
    (editing ? fields.querySelector("input, textarea") || name : name).focus();
  }

  function close() {
    editor.hidden = true;
    form.replaceChildren();
    form.dataset.editing = "";
  }

  document.getElementById("new-connection").addEventListener("click", () => open(null));
  load();
})();
