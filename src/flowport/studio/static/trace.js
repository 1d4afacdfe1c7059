// The trace page: the span tree as a timeline; a span's details, inputs and outputs, LLM messages as a chat.
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  const { call, el } = flowport;
  const id = JSON.parse(document.getElementById("trace-id").textContent);
  let trace;
  try {
    trace = await call("GET", `/traces/${encodeURIComponent(id)}`);
  } catch (error) {
    document.getElementById("trace-error").textContent = error.message;
    return;
  }
  document.getElementById("trace-summary").textContent = [trace.request_id && `request ${trace.request_id}`,
    trace.endpoint && `${trace.endpoint}/${trace.deployment || ""}`, trace.status,
    `${trace.duration_ms} ms`, `${trace.tokens.total} tokens`].filter(Boolean).join(" · ");

  const spans = trace.spans;
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  for (const span of spans) {
    const parent = ids.has(span.parent_id) ? span.parent_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(span);
  }
  const start = Math.min(...spans.map((s) => s.start));
  const total = Math.max(1, Math.max(...spans.map((s) => s.end)) - start);
  const list = document.getElementById("trace-spans");
  const rows = [];

  function kind(span) {
    const a = span.attributes || {};
    if (["chat", "text_completion", "embeddings"].includes(a["gen_ai.operation.name"])) return "llm";
    if (a["flowport.span_type"] === "node") return "node";
    if (a["flowport.span_type"] === "flow") return "flow";
    return "request";
  }

  function add(parent, depth) {
    for (const span of children.get(parent) || []) {
      const left = ((span.start - start) / total) * 100;
      const width = Math.max(0.5, ((span.end - span.start) / total) * 100);
      const failed = span.status === "ERROR";
      const button = el("button", { type: "button", class: `span-row ${kind(span)}${failed ? " failed" : ""}`,
        "aria-pressed": "false", style: `--depth: ${depth}` },
        el("span", { class: "span-name" }, span.name),
        el("span", { class: "span-bar-track", "aria-hidden": "true" },
          el("span", { class: "span-bar", style: `left: ${left}%; width: ${width}%` })),
        el("span", { class: "span-time" }, `${span.duration_ms} ms${failed ? " · failed" : ""}`));
      button.addEventListener("click", () => select(span, button));
      rows.push(button);
      list.append(el("li", {}, button));
      add(span.span_id, depth + 1);
    }
  }
  add(null, 0);

  function parsed(text) {
    try { return JSON.parse(text); } catch { return text; }
  }

  function chat(title, messages) {
    const items = (Array.isArray(messages) ? messages : [messages]).map((m) => {
      const role = (m && m.role) || "assistant";
      const content = m && typeof m === "object" ? (m.content ?? JSON.stringify(m)) : String(m);
      return el("li", { class: `chat-message ${role === "user" ? "user" : "assistant"}` },
        el("strong", {}, `${role}: `), typeof content === "string" ? content : JSON.stringify(content));
    });
    return [el("h3", {}, title), el("ol", { class: "trace-chat" }, items)];
  }

  function select(span, button) {
    for (const row of rows) row.setAttribute("aria-pressed", String(row === button));
    const a = span.attributes || {};
    const facts = [["Status", span.status === "ERROR" ? `Failed: ${span.status_message || ""}` : "ok"],
      ["Duration", `${span.duration_ms} ms`], ["Started", span.start_time], ["Kind", span.kind]];
    if (a["gen_ai.request.model"]) facts.push(["Model", a["gen_ai.request.model"]]);
    if (a["gen_ai.usage.input_tokens"] !== undefined) {
      facts.push(["Tokens", `${a["gen_ai.usage.input_tokens"]} in, ${a["gen_ai.usage.output_tokens"] ?? 0} out`]);
    }
    if (a["gen_ai.response.finish_reasons"]) facts.push(["Finish", [].concat(a["gen_ai.response.finish_reasons"]).join(", ")]);
    const parts = [el("h2", { id: "span-title" }, span.name),
      el("dl", { class: "facts" }, facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]))];
    if (a["gen_ai.input.messages"]) parts.push(...chat("Messages", parsed(a["gen_ai.input.messages"])));
    if (a["gen_ai.output.messages"]) parts.push(...chat("Answer", parsed(a["gen_ai.output.messages"])));
    for (const [key, title] of [["flowport.inputs", "Inputs"], ["flowport.output", "Output"], ["flowport.outputs", "Outputs"]]) {
      if (a[key] !== undefined) {
        parts.push(el("h3", {}, title), el("pre", { class: "span-value" }, JSON.stringify(parsed(a[key]), null, 2)));
      }
    }
    for (const event of span.events || []) {
      const e = event.attributes || {};
      parts.push(el("h3", {}, event.name === "exception" ? "Exception" : event.name),
        el("pre", { class: "span-value error-details" },
          [e["exception.type"], e["exception.message"]].filter(Boolean).join(": ") + (e["exception.stacktrace"] ? `\n\n${e["exception.stacktrace"]}` : "")));
    }
    const rest = Object.entries(a).filter(([k]) => !/^(flowport\.(inputs|output|outputs)|gen_ai\.(input|output)\.messages)$/.test(k));
    parts.push(el("details", {}, el("summary", {}, `Attributes (${rest.length})`),
      el("dl", { class: "facts small" }, rest.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, Array.isArray(v) ? v.join(", ") : String(v))]))));
    document.getElementById("span-detail").replaceChildren(...parts);
  }
  const firstFailed = rows.find((r) => r.classList.contains("failed") && !rows.slice(rows.indexOf(r) + 1).some((o) => o.classList.contains("failed")));
  const llm = rows.find((r) => r.classList.contains("llm"));
  (firstFailed || llm || rows[0])?.click();
});
