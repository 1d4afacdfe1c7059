// Consume tab: the REST URL, keys or token, and ready-to-run code samples for this endpoint.
"use strict";

flowport.tabs["consume"] = async (panel, page) => {
  const { call, el, toast } = flowport;
  const MASK = "••••••••••••••••";

  const copy = flowport.copyText;

  // The flow's inputs from the model of the deployment with the most traffic (or the first one).
  async function flowOf() {
    const traffic = page.endpoint.traffic || {};
    const sorted = [...page.deployments].sort((a, b) => (traffic[b.name] || 0) - (traffic[a.name] || 0));
    const deployment = sorted.find((d) => typeof d.model === "string");
    if (!deployment) return null;
    try {
      return await flowport.modelOf(deployment);
    } catch {
      return null;
    }
  }

  function placeholder(spec) {
    if (spec.is_chat_history) return [];
    if (spec.default !== undefined && spec.default !== null) return spec.default;
    if (Array.isArray(spec.enum) && spec.enum.length) return spec.enum[0];
    if (spec.is_chat_input) return "Hello!";
    switch (String(spec.type || "string").toLowerCase()) {
      case "int": case "double": case "float": case "number": return 0;
      case "bool": case "boolean": return false;
      case "list": return [];
      case "object": return {};
      default: return "text";
    }
  }

  function sampleBody(model) {
    const inputs = (model && model.flow && model.flow.inputs) || {};
    return Object.fromEntries(Object.entries(inputs).map(([name, spec]) => [name, placeholder(spec || {})]));
  }

  // JSON value -> Python literal.
  function py(value, indent = "") {
    if (value === null || value === undefined) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (Array.isArray(value)) return `[${value.map((v) => py(v, indent)).join(", ")}]`;
    if (typeof value === "object") {
      const inner = indent + "    ";
      const items = Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${py(v, inner)},`);
      return items.length ? `{\n${items.join("\n")}\n${indent}}` : "{}";
    }
    return JSON.stringify(value);
  }

  const shell = (text) => `'${String(text).replace(/'/g, "'\\''")}'`;

  function samples(url, secret, body, chatBase, chatInput) {
    const json = JSON.stringify(body);
    const pretty = JSON.stringify(body, null, 2);
    const list = [
      { id: "curl", title: "curl", code: [
        `curl -sS -X POST ${shell(url)} \\`,
        `  -H ${shell(`Authorization: Bearer ${secret}`)} \\`,
        `  -H 'Content-Type: application/json' \\`,
        `  -d ${shell(json)}`,
      ].join("\n") },
      { id: "python", title: "Python (requests)", code: [
        "import requests",
        "",
        `url = ${JSON.stringify(url)}`,
        `headers = {"Authorization": ${JSON.stringify(`Bearer ${secret}`)}, "Content-Type": "application/json"}`,
        `body = ${py(body)}`,
        "",
        "response = requests.post(url, json=body, headers=headers, timeout=60)",
        "response.raise_for_status()",
        "print(response.json())",
      ].join("\n") },
    ];
    if (chatBase) {
      list.push({ id: "openai", title: "Python (openai SDK)", code: [
        "from openai import OpenAI",
        "",
        `client = OpenAI(base_url=${JSON.stringify(chatBase)}, api_key=${JSON.stringify(secret)})`,
        "completion = client.chat.completions.create(",
        `    model=${JSON.stringify(page.name)},`,
        `    messages=[{"role": "user", "content": ${JSON.stringify(String(body[chatInput] ?? "Hello!"))}}],`,
        ")",
        "print(completion.choices[0].message.content)",
      ].join("\n") });
    }
    list.push({ id: "javascript", title: "JavaScript (fetch)", code: [
      `const body = ${pretty};`,
      "",
      `const response = await fetch(${JSON.stringify(url)}, {`,
      `  method: "POST",`,
      `  headers: { "Authorization": ${JSON.stringify(`Bearer ${secret}`)}, "Content-Type": "application/json" },`,
      "  body: JSON.stringify(body),",
      "});",
      "if (!response.ok) throw new Error(`HTTP ${response.status}: ${await response.text()}`);",
      "console.log(await response.json());",
    ].join("\n") });
    list.push({ id: "csharp", title: "C# (HttpClient)", code: [
      "using System.Net.Http.Headers;",
      "using System.Text;",
      "",
      "using var client = new HttpClient();",
      `client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ${JSON.stringify(secret)});`,
      `var body = @"${json.replace(/"/g, '""')}";`,
      `var content = new StringContent(body, Encoding.UTF8, "application/json");`,
      `var response = await client.PostAsync(${JSON.stringify(url)}, content);`,
      "response.EnsureSuccessStatusCode();",
      "Console.WriteLine(await response.Content.ReadAsStringAsync());",
    ].join("\n") });
    return list;
  }

  function secretRow(label, value, id) {
    let shown = false;
    const code = el("code", { id, class: "secret", "aria-label": `${label} (hidden)` }, MASK);
    const toggle = el("button", { type: "button", "aria-pressed": "false", "aria-controls": id,
      "aria-label": `Show ${label}`,
      onclick: () => {
        shown = !shown;
        code.textContent = shown ? value : MASK;
        code.setAttribute("aria-label", shown ? label : `${label} (hidden)`);
        toggle.textContent = shown ? "Hide" : "Show";
        toggle.setAttribute("aria-pressed", String(shown));
        toggle.setAttribute("aria-label", `${shown ? "Hide" : "Show"} ${label}`);
      } }, "Show");
    return el("div", { class: "secret-row" },
      el("span", { class: "secret-label" }, label), code, toggle,
      el("button", { type: "button", "aria-label": `Copy ${label}`, onclick: () => copy(value, `${label} copied`) },
        "Copy"));
  }

  async function render() {
    const endpoint = page.endpoint;
    const [credentials, model] = await Promise.all([
      call("POST", `/endpoints/${page.name}/credentials`), flowOf()]);
    const url = endpoint.scoring_uri;
    const keyAuth = endpoint.auth_mode !== "aml_token";
    const secret = keyAuth ? credentials.primaryKey : credentials.accessToken;

    const auth = el("section", { class: "card", "aria-labelledby": "consume-auth" },
      el("h2", { id: "consume-auth" }, keyAuth ? "Keys" : "Token"));
    if (keyAuth) {
      const regenerate = (which) => el("button", { type: "button", class: "danger",
        onclick: async (event) => {
          if (!window.confirm(`Regenerate the ${which} key? Clients using it will get 401 until updated.`)) return;
          event.target.disabled = true;
          try {
            await call("POST", `/endpoints/${page.name}/regenerate-keys`, { key_type: which });
            toast(`${which[0].toUpperCase()}${which.slice(1)} key regenerated`);
            await render();
          } catch (e) {
            event.target.disabled = false;
            toast(e.message, "bad");
          }
        } }, `Regenerate ${which}`);
      auth.append(
        secretRow("Primary key", credentials.primaryKey, "consume-primary-key"),
        secretRow("Secondary key", credentials.secondaryKey, "consume-secondary-key"),
        el("p", { class: "hint" }, "Regenerating one key leaves the other working, so clients can rotate without downtime."),
        el("div", { class: "actions" }, regenerate("primary"), regenerate("secondary")));
    } else {
      auth.append(
        secretRow("Access token", credentials.accessToken, "consume-token"),
        el("p", {}, "Expires: ", el("time", { datetime: credentials.expiryTimeUtc, id: "consume-token-expiry" },
          credentials.expiryTimeUtc ? new Date(credentials.expiryTimeUtc).toLocaleString() : "unknown"),
          credentials.refreshAfterTimeUtc ? ` (refresh after ${new Date(credentials.refreshAfterTimeUtc).toLocaleString()})` : ""),
        el("div", { class: "actions" }, el("button", { type: "button",
          onclick: async () => { await render(); toast("Token refreshed"); } }, "Refresh token")));
    }

    const body = sampleBody(model);
    const inputs = (model && model.flow && model.flow.inputs) || {};
    const chatInput = Object.keys(inputs).find((k) => inputs[k] && inputs[k].is_chat_input);
    const chat = (model && model.flow_type === "chat") || chatInput !== undefined;
    const chatBase = chat && url ? url.replace(/\/score$/, "/v1") : null;

    const codeCards = samples(url, secret, body, chatBase, chatInput).map((s) => {
      const code = el("code", { id: `sample-${s.id}` }, s.code);
      return el("section", { class: "sample", "aria-labelledby": `sample-${s.id}-title` },
        el("div", { class: "sample-head" },
          el("h3", { id: `sample-${s.id}-title` }, s.title),
          el("button", { type: "button", "aria-label": `Copy ${s.title} sample`,
            onclick: () => copy(s.code, `${s.title} sample copied`) }, "Copy")),
        el("pre", { tabindex: 0 }, code));
    });

    panel.replaceChildren(
      el("section", { class: "card", "aria-labelledby": "consume-rest" },
        el("h2", { id: "consume-rest" }, "REST endpoint"),
        flowport.copyField("Scoring URL", url, "consume-url"),
        chatBase ? el("p", { class: "hint" }, "OpenAI-compatible base URL: ", el("code", {}, chatBase)) : null),
      auth,
      el("section", { class: "card", "aria-labelledby": "consume-samples" },
        el("h2", { id: "consume-samples" }, "Code samples"),
        model ? null : el("p", { class: "muted" }, "No deployment yet: the sample body is empty."),
        el("p", { class: "hint" }, "These samples contain a real credential: keep them private."),
        codeCards));
  }

  await render();
};
