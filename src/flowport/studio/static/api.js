// The studio's one way to the REST API: the session cookie, plus the CSRF token for changes.
"use strict";

const flowport = (() => {
  let csrf = null;

  async function token() {
    if (csrf === null) {
      const response = await fetch("/api/v1/sessions/current", { credentials: "same-origin" });
      if (response.status === 401) {
        location.assign("/studio/login?next=" + encodeURIComponent(location.pathname));
        throw new Error("not signed in");
      }
      csrf = (await response.json()).csrf;
    }
    return csrf;
  }

  class ApiError extends Error {
    constructor(status, body) {
      const error = (body && body.error) || {};
      super(error.message || `HTTP ${status}`);
      this.status = status;
      this.code = error.code;
      this.details = error.details || [];
    }
  }

  // call("GET", "/endpoints") -> parsed JSON; throws ApiError with the API's message.
  async function call(method, path, body) {
    const headers = { accept: "application/json" };
    if (!["GET", "HEAD"].includes(method)) headers["x-csrf-token"] = await token();
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch("/api/v1" + path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      location.assign("/studio/login?next=" + encodeURIComponent(location.pathname));
      throw new ApiError(401, null);
    }
    const text = await response.text();
    const parsed = text && (response.headers.get("content-type") || "").includes("json") ? JSON.parse(text) : text;
    if (!response.ok) throw new ApiError(response.status, parsed);
    return parsed;
  }

  // Follows a long-running operation until it ends; onUpdate(operation) on every poll.
  async function follow(operation, onUpdate) {
    while (operation.status === "Running") {
      if (onUpdate) onUpdate(operation);
      await new Promise((resolve) => setTimeout(resolve, 300));
      operation = await call("GET", `/operations/${operation.id}`);
    }
    if (onUpdate) onUpdate(operation);
    return operation;
  }

  // el("td", {class: "x"}, "text", child) -> element; text is always set as text, never HTML.
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === false || value === null || value === undefined) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function toast(message, kind) {
    const box = document.getElementById("toast");
    box.textContent = message;
    box.className = "show " + (kind || "");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.className = ""; }, 4000);
  }

  function trafficText(traffic) {
    const parts = Object.entries(traffic || {}).filter(([, share]) => share > 0);
    return parts.length ? parts.map(([name, share]) => `${name} ${share}%`).join(", ") : "none";
  }

  document.addEventListener("DOMContentLoaded", () => {
    const signOut = document.getElementById("sign-out");
    if (signOut) signOut.addEventListener("click", async () => {
      await call("DELETE", "/sessions/current");
      location.assign("/studio/login");
    });
  });

  // The registered model a deployment runs ("azureml:name:version"), fetched once per page.
  const models = new Map();
  async function modelOf(deployment) {
    const reference = String(deployment.model || "");
    if (!models.has(reference)) {
      const [name, version] = reference.replace(/^azureml:/, "").split(":");
      const query = version ? `?version=${encodeURIComponent(version)}` : "";
      models.set(reference, call("GET", `/models/${encodeURIComponent(name)}${query}`));
    }
    return models.get(reference);
  }

  return { call, follow, el, toast, trafficText, modelOf, ApiError };
})();

// A read-only value with a Copy button (shared by the endpoint tabs).
flowport.copyField = (label, value, id) => {
  const { el } = flowport;
  const input = el("input", { id, type: "text", readonly: true, value, class: "copy-value" });
  return el("div", { class: "copy-field" },
    el("label", { for: id }, label),
    el("div", { class: "copy-row" }, input,
      el("button", { type: "button", "aria-label": `Copy ${label}`,
        onclick: () => flowport.copyText(value, `${label} copied`) }, "Copy")));
};

// Copies text to the clipboard; falls back to a hidden textarea where the Clipboard API is missing.
flowport.copyText = async (text, message) => {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = flowport.el("textarea", { class: "sr-only", "aria-hidden": "true" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  flowport.toast(message || "Copied");
};

