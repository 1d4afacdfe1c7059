// The Test tab: a form (or JSON) for standard flows, a streaming chat window for chat flows.
"use strict";
flowport.tabs["test"] = async (panel, page) => {
  const { call, el } = flowport;
  let serial = 0;

  if (!page.deployments.length) {
    panel.append(el("p", { class: "muted" }, "No deployments yet. ",
      el("a", { href: "/studio/deploy" }, "Deploy a flow"), " to test it here."));
    return;
  }

  const picker = el("select", { id: "test-deployment" },
    el("option", { value: "" }, "Any (traffic split)"),
    page.deployments.map((d) => el("option", { value: d.name }, d.name)));
  const body = el("div", { class: "test-body" });
  panel.append(
    el("div", { class: "test-toolbar" },
      el("label", { for: "test-deployment" }, "Deployment"), picker),
    body,
  );

  const modelOf = flowport.modelOf;

  // The secret for the gateway: a key, or a fresh token for aml_token endpoints.
  async function secret() {
    const credentials = await call("POST", `/endpoints/${page.name}/credentials`);
    return credentials.primaryKey || credentials.accessToken;
  }

  async function score(payload, stream, route = "score") {
    const headers = {
      "content-type": "application/json",
      authorization: `Bearer ${await secret()}`,
      accept: stream ? "text/event-stream" : "application/json",
    };
    if (picker.value) headers["azureml-model-deployment"] = picker.value;
    return fetch(`/endpoints/${encodeURIComponent(page.name)}/${route}`, {
      method: "POST", headers, body: JSON.stringify(payload), credentials: "omit",
    });
  }

  async function errorText(response) {
    const text = await response.text();
    let message = text;
    try {
      const parsed = JSON.parse(text);
      message = (parsed.error && (parsed.error.message || parsed.error.code)) || parsed.message || text;
    } catch { /* not JSON: keep the text */ }
    return `${response.status} ${response.statusText || ""}`.trim() + (message ? `: ${message}` : "");
  }

  // -- one input field per flow input ------------------------------------------------------
  // read() gives the value to send, OMIT for an empty field the flow has a default for, and
  // throws for an empty required field or a bad value.
  const OMIT = Symbol("omit");
  const shown = (v) => (typeof v === "string" ? v : JSON.stringify(v));

  function field(name, input) {
    const id = `test-input-${++serial}`;
    const type = input.type || "string";
    const hasDefault = "default" in input;
    const value = input.default;
    const required = !hasDefault;
    let control;
    if (Array.isArray(input.enum) && input.enum.length) {
      control = el("select", { id },
        required ? el("option", { value: "" }, "Choose…") : null,
        input.enum.map((option) => el("option", { value: String(option) }, String(option))));
      if (hasDefault) control.value = String(value);
    } else if (type === "bool") {
      control = el("input", { id, type: "checkbox", checked: value === true || value === "true" });
    } else if (type === "int" || type === "double") {
      control = el("input", { id, type: "number", step: type === "int" ? "1" : "any" });
      if (hasDefault && value !== null) control.value = String(value);
    } else if (type === "list" || type === "object") {
      control = el("textarea", { id, class: "code", rows: 4, spellcheck: "false" });
      control.value = JSON.stringify(hasDefault ? value : (type === "list" ? [] : {}), null, 2);
    } else {
      control = el("input", { id, type: "text", autocomplete: "off" });
      if (hasDefault && value !== null) control.value = shown(value);
    }
    if (hasDefault && value !== null && control.tagName !== "SELECT" && type !== "bool") {
      control.setAttribute("placeholder", shown(value));
    }
    if (required) control.setAttribute("aria-required", "true");
    const error = el("p", { class: "error", id: `${id}-error` });
    const about = required ? `${type} · required`
      : `${type} · default ${value === null ? "null" : shown(value)}`;
    const hint = el("span", { class: "hint", id: `${id}-type` }, about);
    control.setAttribute("aria-describedby", `${id}-type ${id}-error`);
    const wrap = type === "bool"
      ? el("div", { class: "field" },
        el("div", { class: "field-head" }, el("label", { for: id, class: "inline" }, control, " ", name), hint), error)
      : el("div", { class: "field" }, el("div", { class: "field-head" }, el("label", { for: id }, name), hint),
        control, error);
    const empty = () => {
      if (required) throw invalid("Required: enter a value.");
      return OMIT; // the flow's default applies
    };
    return {
      name, wrap, control, required,
      read() {
        error.textContent = "";
        control.removeAttribute("aria-invalid");
        if (control.tagName === "SELECT") {
          if (control.value === "") return empty();
          const original = input.enum.find((o) => String(o) === control.value);
          return original === undefined ? control.value : original;
        }
        if (type === "bool") return control.checked;
        if (type === "int" || type === "double") {
          if (control.value.trim() === "") return empty();
          const number = Number(control.value);
          if (Number.isNaN(number) || (type === "int" && !Number.isInteger(number))) {
            throw invalid(type === "int" ? "A whole number." : "A number.");
          }
          return number;
        }
        if (type === "list" || type === "object") {
          if (control.value.trim() === "") return empty();
          try { return JSON.parse(control.value); } catch (e) {
            throw invalid(`Not valid JSON: ${e.message}`);
          }
        }
        return control.value === "" ? empty() : control.value;
      },
      clear() {
        error.textContent = "";
        control.removeAttribute("aria-invalid");
      },
      write(v) {
        if (control.tagName === "SELECT") control.value = String(v);
        else if (type === "bool") control.checked = v === true || v === "true";
        else if (type === "list" || type === "object") control.value = JSON.stringify(v, null, 2);
        else control.value = v === undefined || v === null ? "" : shown(v);
      },
    };
    function invalid(message) {
      error.textContent = message;
      control.setAttribute("aria-invalid", "true");
      return Object.assign(new Error(`${name}: ${message}`), { field: name, missing: message.startsWith("Required") });
    }
  }

  // Every field's value (empty ones with a default left out); one error naming every bad field.
  // Not strict (switching to the JSON editor): the fields that read well, no errors shown.
  function readFields(fields, strict = true) {
    const values = {};
    const problems = [];
    for (const f of fields) {
      try {
        const v = f.read();
        if (v !== OMIT) values[f.name] = v;
      } catch (error) {
        if (strict) problems.push(error);
        else f.clear();
      }
    }
    if (problems.length) {
      const missing = problems.filter((e) => e.missing).map((e) => e.field);
      const bad = problems.filter((e) => !e.missing).map((e) => e.message);
      const parts = [];
      if (missing.length) parts.push(`Fill in the required input${missing.length > 1 ? "s" : ""}: ${missing.join(", ")}.`);
      parts.push(...bad);
      fields.find((f) => f.control.getAttribute("aria-invalid"))?.control.focus();
      throw new Error(parts.join(" "));
    }
    return values;
  }

  // The required inputs a JSON body leaves out or empty.
  function missingIn(payload, fields) {
    return fields.filter((f) => f.required).map((f) => f.name)
      .filter((n) => !(n in payload) || payload[n] === null || payload[n] === "");
  }

  // -- standard flows ---------------------------------------------------------------------
  function standard(model) {
    const fields = Object.entries(model.flow.inputs || {}).map(([name, input]) => field(name, input));
    const json = el("textarea", { id: "test-json", class: "code", rows: 12, spellcheck: "false",
      "aria-describedby": "test-json-error" });
    const jsonError = el("p", { class: "error", id: "test-json-error" });
    const formPane = el("div", { id: "test-form-pane" }, fields.length ? fields.map((f) => f.wrap)
      : el("p", { class: "muted" }, "The flow has no inputs."));
    const jsonPane = el("div", { id: "test-json-pane", hidden: true },
      el("label", { for: "test-json" }, "Request body (JSON)"), json, jsonError);
    let mode = "form";
    const toggles = {};
    const status = el("p", { class: "test-status", role: "status", "aria-live": "polite" });
    const output = el("pre", { class: "test-response", tabindex: "0", "aria-label": "Response" });
    const readForm = () => readFields(fields);

    function switchTo(next) {
      if (next === mode) return;
      try {
        if (next === "json") {
          json.value = JSON.stringify(readFields(fields, false), null, 2);
        } else {
          const parsed = JSON.parse(json.value || "{}");
          for (const f of fields) if (f.name in parsed) f.write(parsed[f.name]);
        }
      } catch (error) {
        (next === "json" ? status : jsonError).textContent = error.message;
        return;
      }
      jsonError.textContent = "";
      mode = next;
      formPane.hidden = mode !== "form";
      jsonPane.hidden = mode !== "json";
      for (const [key, button] of Object.entries(toggles)) button.setAttribute("aria-pressed", String(key === mode));
    }
    toggles.form = el("button", { type: "button", "aria-pressed": "true", onclick: () => switchTo("form") }, "Form");
    toggles.json = el("button", { type: "button", "aria-pressed": "false", onclick: () => switchTo("json") }, "JSON");

    const send = el("button", { type: "submit", class: "primary" }, "Send");
    const form = el("form", { class: "card test-standard", "aria-label": "Request" },
      el("div", { class: "toggle", role: "group", "aria-label": "Edit the request as" }, toggles.form, toggles.json),
      formPane, jsonPane, el("div", { class: "actions" }, send));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let payload;
      try {
        if (mode === "json") {
          try { payload = JSON.parse(json.value); } catch (e) {
            jsonError.textContent = `Not valid JSON: ${e.message}`;
            return;
          }
          const missing = payload && typeof payload === "object" && !Array.isArray(payload)
            ? missingIn(payload, fields) : [];
          if (missing.length) {
            jsonError.textContent = `Fill in the required input${missing.length > 1 ? "s" : ""}: ${missing.join(", ")}.`;
            return;
          }
          jsonError.textContent = "";
        } else {
          payload = readForm();
        }
      } catch (error) {
        status.textContent = error.message;
        status.className = "test-status error";
        return;
      }
      send.disabled = true;
      status.className = "test-status";
      status.textContent = "Sending…";
      output.textContent = "";
      const started = performance.now();
      try {
        const response = await score(payload, false);
        const ms = Math.round(performance.now() - started);
        const served = response.headers.get("azureml-model-deployment");
        const requestId = response.headers.get("x-request-id");
        const traceLink = () => requestId ? [" · ", el("a", { href: `/studio/traces?request_id=${encodeURIComponent(requestId)}` }, "Trace")] : [];
        if (!response.ok) {
          status.className = "test-status error";
          status.replaceChildren(`${await errorText(response)} (${ms} ms)`, ...traceLink());
          return;
        }
        const text = await response.text();
        status.replaceChildren(`${response.status} ${response.statusText || "OK"} · ${ms} ms${served ? ` · ${served}` : ""}`, ...traceLink());
        try { output.textContent = JSON.stringify(JSON.parse(text), null, 2); } catch { output.textContent = text; }
      } catch (error) {
        status.className = "test-status error";
        status.textContent = error.message;
      } finally {
        send.disabled = false;
      }
    });
    return el("div", { class: "test-columns" }, form,
      el("section", { class: "card", "aria-label": "Response" }, el("h3", {}, "Response"), status, output));
  }

  // -- chat flows -------------------------------------------------------------------------
  function chat(model) {
    const inputs = model.flow.inputs || {};
    const outputs = model.flow.outputs || {};
    const props = model.properties || {};
    const chatInput = Object.keys(inputs).find((n) => inputs[n].is_chat_input) || props["azureml.promptflow.chat_input"];
    const chatHistory = Object.keys(inputs).find((n) => inputs[n].is_chat_history) || "chat_history";
    const chatOutput = Object.keys(outputs).find((n) => outputs[n].is_chat_output)
      || props["azureml.promptflow.chat_output"];
    const others = Object.entries(inputs).filter(([n]) => n !== chatInput && n !== chatHistory)
      .map(([name, input]) => field(name, input));
    const history = [];
    // A chat prompty's history is OpenAI messages: it talks over the OpenAI route, which streams
    // whether or not the prompty itself does.
    const openai = model.flow.chat_history_format === "messages";

    const log = el("ol", { class: "chat-log", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
    const empty = el("li", { class: "chat-empty muted" }, "Ask something to start the conversation.");
    log.append(empty);
    const box = el("textarea", { id: "chat-message", rows: 2, placeholder: "Type a message; Enter sends, Shift+Enter adds a line" });
    const send = el("button", { type: "submit", class: "primary" }, "Send");
    const clear = el("button", { type: "button" }, "Clear chat");
    const composer = el("form", { class: "chat-composer", "aria-label": "Send a message" },
      el("label", { for: "chat-message", class: "sr-only" }, "Message"), box, send);
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        composer.requestSubmit();
      }
    });
    clear.addEventListener("click", () => {
      history.length = 0;
      log.replaceChildren(empty);
      box.focus();
    });

    function bubble(role, text) {
      const content = el("div", { class: "chat-text" }, text);
      const item = el("li", { class: `chat-message ${role}` },
        el("span", { class: "chat-role" }, role === "user" ? "You" : "Assistant"), content);
      empty.remove();
      log.append(item);
      log.scrollTop = log.scrollHeight;
      return { item, content };
    }

    composer.addEventListener("submit", async (event) => {
      event.preventDefault();
      const question = box.value.trim();
      if (!question || send.disabled) return;
      let extra;
      try {
        extra = readFields(others);
      } catch {
        return;
      }
      box.value = "";
      send.disabled = true;
      bubble("user", question);
      const reply = bubble("assistant", "");
      reply.item.classList.add("streaming");
      reply.item.setAttribute("aria-busy", "true");
      const payload = openai
        ? { ...extra, stream: true, messages: [...history, { role: "user", content: question }] }
        : { ...extra, [chatInput]: question, [chatHistory]: history.slice() };
      let answer = "";
      const extras = {};
      const append = (chunk) => {
        answer += typeof chunk === "string" ? chunk : JSON.stringify(chunk);
        reply.content.textContent = answer;
        log.scrollTop = log.scrollHeight;
      };
      const frame = (data) => {
        if (openai) {  // an OpenAI chunk, or its error event
          if (data && data.error) throw new Error(data.error.message || data.error.code);
          const delta = (((data || {}).choices || [])[0] || {}).delta || {};
          if (delta.content) append(delta.content);
          return;
        }
        for (const [key, value] of Object.entries(data || {})) {
          if (key === chatOutput) append(value);
          else extras[key] = value;
        }
      };
      try {
        const response = await score(payload, true, openai ? "v1/chat/completions" : "score");
        if (!response.ok) throw new Error(await errorText(response));
        const type = response.headers.get("content-type") || "";
        if (type.includes("text/event-stream") && response.body) {
          const reader = response.body.getReader();
          const decoder = new TextDecoder();
          let buffer = "";
          const drain = (final) => {
            buffer = buffer.replace(/\r\n/g, "\n");
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0 || (final && buffer.trim())) {
              const chunk = end >= 0 ? buffer.slice(0, end) : buffer;
              buffer = end >= 0 ? buffer.slice(end + 2) : "";
              const lines = chunk.split("\n");
              const data = lines.filter((l) => l.startsWith("data:"))
                .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
              if (lines.some((l) => l.replace(/ /g, "") === "event:error")) {
                // The flow failed midway: an error frame, not an output.
                const failure = JSON.parse(data || "{}").error || {};
                throw new Error(failure.message || failure.code || "the stream broke off");
              }
              if (data && data !== "[DONE]") frame(JSON.parse(data));
            }
          };
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += decoder.decode(value, { stream: true });
            drain(false);
          }
          buffer += decoder.decode();
          drain(true);
        } else {
          frame(JSON.parse(await response.text()));
        }
        if (Object.keys(extras).length) {
          reply.item.append(el("dl", { class: "chat-extras" },
            Object.entries(extras).flatMap(([k, v]) => [el("dt", {}, k),
              el("dd", {}, typeof v === "string" ? v : JSON.stringify(v))])));
        }
        if (openai) {
          history.push({ role: "user", content: question }, { role: "assistant", content: answer });
        } else {
          history.push({ inputs: { [chatInput]: question }, outputs: { [chatOutput]: answer } });
        }
      } catch (error) {
        reply.item.classList.add("failed");
        reply.content.textContent = answer;
        reply.item.append(el("p", { class: "error", role: "alert" }, error.message));
      } finally {
        reply.item.classList.remove("streaming");
        reply.item.removeAttribute("aria-busy");
        send.disabled = false;
        box.focus();
      }
    });

    return el("div", { class: "chat-layout" },
      el("section", { class: "card chat-window", "aria-label": "Chat" },
        el("div", { class: "chat-head" }, el("h3", {}, "Chat"), clear), log, composer),
      el("aside", { class: "card chat-side", "aria-label": "Other inputs" },
        el("h3", {}, "Inputs"),
        others.length ? others.map((f) => f.wrap) : el("p", { class: "muted" }, "The flow has no other inputs."),
        el("p", { class: "hint" }, `Chat input: ${chatInput} · chat output: ${chatOutput} · history: ${chatHistory}`)));
  }

  let shownModel = null;
  async function render() {
    const deployment = page.deployments.find((d) => d.name === picker.value)
      || page.deployments.find((d) => (page.endpoint.traffic || {})[d.name] > 0) || page.deployments[0];
    const loading = el("p", { class: "muted" }, "Loading the flow's inputs…");
    body.prepend(loading);
    try {
      const script = deployment.code_configuration;
      if (script) { // a scoring script: any JSON body, no flow inputs to list
        shownModel = null;
        body.replaceChildren(
          el("p", { class: "muted" }, `Scoring script ${script.scoring_script} (from ${deployment.name})`),
          standard({ flow: { inputs: {} } }));
        return;
      }
      const model = await modelOf(deployment);
      if (shownModel === model.id) {
        loading.remove(); // the same flow: keep the form and the conversation
        return;
      }
      shownModel = model.id;
      const chatFlow = model.flow_type === "chat";
      body.replaceChildren(
        el("p", { class: "muted" }, `${chatFlow ? "Chat" : "Standard"} flow ${model.id} (from ${deployment.name})`),
        chatFlow ? chat(model) : standard(model));
    } catch (error) {
      shownModel = null;
      body.replaceChildren(el("p", { class: "error", role: "alert" },
        `Could not load the model of ${deployment.name}: ${error.message}`));
    }
  }
  picker.addEventListener("change", render);
  await render();
};
