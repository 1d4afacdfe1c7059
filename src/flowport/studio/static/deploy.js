// The deploy wizard: basic settings, endpoint settings, outputs & connections, review + create.
"use strict";
(async () => {
  const { call, el, follow } = flowport;
  const $ = (id) => document.getElementById(id);
  const form = $("deploy-wizard");
  const NAME = /^[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*$/;
  const validName = (name) => name.length >= 3 && name.length <= 32 && NAME.test(name);
  let step = 1;
  let models = [], endpoints = [], connections = [], existingDeployments = [];
  let registered = null; // {path, name, model} of a flow folder registered on Next
  let created = false;

  const radio = (name) => form.querySelector(`input[name="${name}"]:checked`).value;

  function showWhen() {
    for (const box of form.querySelectorAll("[data-when]")) {
      const [name, value] = box.dataset.when.split("=");
      box.hidden = radio(name) !== value;
    }
  }

  function fieldError(id, message) {
    const field = $(id);
    const box = $(`${id}-error`);
    if (box) box.textContent = message || "";
    if (field) {
      if (message) field.setAttribute("aria-invalid", "true");
      else field.removeAttribute("aria-invalid");
    }
    return !message;
  }

  function fillSelect(select, items, empty) {
    select.replaceChildren(...(items.length ? items.map(([value, label]) => el("option", { value }, label))
      : [el("option", { value: "" }, empty)]));
  }

  // -- loading ----------------------------------------------------------------------------
  [models, endpoints, connections] = await Promise.all([
    call("GET", "/models"), call("GET", "/endpoints"), call("GET", "/connections"),
  ]);
  const flows = models.filter((m) => m.layout !== "files"); // plain files need a scoring script
  fillSelect($("model"), flows.map((m) => [m.id, `${m.name}:${m.version} (${m.flow_type} flow)`]),
    "No models registered yet");
  fillSelect($("endpoint-existing"), endpoints.map((e) => [e.name, `${e.name} (${e.auth_mode})`]),
    "No endpoints yet");
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted && models.some((m) => m.id === wanted)) $("model").value = wanted;

  async function loadExistingDeployments() {
    existingDeployments = [];
    if (radio("endpoint-mode") === "existing" && $("endpoint-existing").value) {
      existingDeployments = await call("GET", `/endpoints/${$("endpoint-existing").value}/deployments`);
    }
    updateReplace();
  }

  function replacing() {
    const name = $("deployment-name").value.trim();
    return radio("endpoint-mode") === "existing" && existingDeployments.some((d) => d.name === name);
  }

  function updateReplace() {
    const show = replacing();
    $("replace-box").hidden = !show;
    $("replace-text").textContent = `Replace the existing deployment ${$("deployment-name").value.trim()}`;
    if (!show) $("replace").checked = false;
  }

  form.addEventListener("change", (event) => {
    showWhen();
    if (["endpoint-mode", "endpoint-existing"].includes(event.target.name || event.target.id)) {
      loadExistingDeployments();
    }
  });
  $("deployment-name").addEventListener("input", updateReplace);
  $("flow-path").addEventListener("input", () => {
    if (!$("model-name").dataset.touched) {
      const base = $("flow-path").value.trim().replace(/[\\/]+$/, "").split(/[\\/]/).pop() || "";
      $("model-name").value = base.replace(/[^A-Za-z0-9_.-]/g, "-");
    }
  });
  $("model-name").addEventListener("input", () => { $("model-name").dataset.touched = "1"; });

  // -- the chosen model -------------------------------------------------------------------
  function chosenModel() {
    if (radio("source") === "path") return registered && registered.model;
    return models.find((m) => m.id === $("model").value) || null;
  }

  // -- validation per step ----------------------------------------------------------------
  // One check per step-1 field: its message, or "" when the value is fine.
  const NAME_RULE = "3-32 characters: a letter first, then letters, digits and single dashes.";
  const checks = {
    "model": () => ($("model").value ? "" : "Choose a model version, or deploy a flow folder."),
    "flow-path": () => ($("flow-path").value.trim() ? "" : "Enter the flow folder's path on the server."),
    "model-name": () => (/^[A-Za-z0-9_.-]+$/.test($("model-name").value.trim()) ? ""
      : "Enter a model name: letters, digits, _ . -"),
    "endpoint-name": () => {
      const name = $("endpoint-name").value.trim();
      if (!validName(name)) return NAME_RULE;
      return endpoints.some((e) => e.name === name)
        ? `An endpoint named ${name} exists: choose "Existing endpoint" to add a deployment to it.` : "";
    },
    "endpoint-existing": () => ($("endpoint-existing").value ? "" : "Choose an endpoint."),
    "deployment-name": () => (validName($("deployment-name").value.trim()) ? "" : NAME_RULE),
    "replace": () => (replacing() && !$("replace").checked
      ? `A deployment named ${$("deployment-name").value.trim()} exists on this endpoint: confirm to replace it, or choose another name.`
      : ""),
    "instance-count": () => {
      const count = Number($("instance-count").value);
      return Number.isInteger(count) && count >= 1 && count <= 50 ? "" : "A whole number from 1 to 50.";
    },
  };
  const check = (id) => fieldError(id, checks[id]());

  // A field that shows an error is checked again as it changes: a fixed value clears the message.
  for (const kind of ["input", "change"]) {
    form.addEventListener(kind, (event) => {
      const id = event.target.id;
      if (checks[id] && $(`${id}-error`) && $(`${id}-error`).textContent) check(id);
      if (id === "deployment-name" && $("replace-error").textContent) check("replace");
    });
  }

  async function validateStep1() {
    let ok = true;
    if (radio("source") === "model") {
      ok = check("model") && ok;
    } else {
      ok = check("flow-path") && ok;
      ok = check("model-name") && ok;
    }
    ok = check(radio("endpoint-mode") === "new" ? "endpoint-name" : "endpoint-existing") && ok;
    ok = check("deployment-name") && ok;
    ok = check("replace") && ok;
    ok = check("instance-count") && ok;
    if (!ok) return false;
    if (radio("source") === "path") {
      const path = $("flow-path").value.trim();
      const name = $("model-name").value.trim();
      if (!registered || registered.path !== path || registered.name !== name) {
        try {
          const model = await call("POST", "/models", { spec: { name, path } });
          if (model.layout === "files") {
            return fieldError("flow-path",
              "No flow there (flow.dag.yaml, flow.flex.yaml or .prompty): a scoring-script deployment needs its YAML file.");
          }
          registered = { path, name, model };
          models.push(model);
        } catch (error) {
          return fieldError("flow-path", `Could not register the flow: ${error.message}`);
        }
      }
    }
    return true;
  }

  function parseTags() {
    const tags = {};
    const lines = $("tags").value.split("\n").map((l) => l.trim()).filter(Boolean);
    for (const [index, line] of lines.entries()) {
      const at = line.indexOf("=");
      if (at < 1) throw new Error(`Line ${index + 1}: write key=value.`);
      tags[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    return tags;
  }

  function validateStep2() {
    if (radio("endpoint-mode") !== "new") return true;
    try {
      parseTags();
      return fieldError("tags", "");
    } catch (error) {
      return fieldError("tags", error.message);
    }
  }

  function validateStep3() {
    const boxes = [...$("outputs").querySelectorAll("input[type=checkbox]")];
    return fieldError("outputs", boxes.length && !boxes.some((b) => b.checked)
      ? "Choose at least one output." : "");
  }

  // -- step 2 and 3 content ---------------------------------------------------------------
  function prepareStep2() {
    const isNew = radio("endpoint-mode") === "new";
    $("endpoint-kept").hidden = isNew;
    $("endpoint-settings").hidden = !isNew;
  }

  let preparedFor = null;
  function prepareStep3() {
    const model = chosenModel();
    if (!model || preparedFor === model.id) return;
    preparedFor = model.id;
    const outputs = Object.entries(model.flow.outputs || {}).filter(([, o]) => !o.evaluation_only);
    $("outputs").replaceChildren(...(outputs.length ? outputs.map(([name, output]) =>
      el("label", { class: "inline" }, el("input", { type: "checkbox", name: "output", value: name, checked: true }),
        " ", name, output.is_chat_output ? el("span", { class: "hint" }, " (chat output)") : null))
      : [el("p", { class: "muted" }, "The flow has no outputs.")]));
    const used = model.flow.connections || [];
    $("connections").replaceChildren(...(used.length ? used.map((name, index) => el("div", {},
      el("label", { for: `connection-${index}` }, name),
      el("select", { id: `connection-${index}`, "data-connection": name },
        el("option", { value: "" }, `Keep ${name}`),
        connections.filter((c) => c.name !== name).map((c) =>
          el("option", { value: c.name }, `Use ${c.name}${c.type ? ` (${c.type})` : ""}`)))))
      : [el("p", { class: "muted" }, "The flow uses no connections.")]));
  }

  // -- the specs --------------------------------------------------------------------------
  function endpointName() {
    return radio("endpoint-mode") === "new" ? $("endpoint-name").value.trim() : $("endpoint-existing").value;
  }

  function deploymentSpec() {
    const model = chosenModel();
    const env = {};
    const boxes = [...$("outputs").querySelectorAll("input[type=checkbox]")];
    const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
    if (chosen.length < boxes.length) env.PROMPTFLOW_RESPONSE_INCLUDED_FIELDS = JSON.stringify(chosen);
    for (const select of $("connections").querySelectorAll("select")) {
      if (select.value) env[select.dataset.connection] = select.value;
    }
    const spec = { model: model.id, instance_count: Number($("instance-count").value), environment_variables: env };
    const collect = $("collect").checked;
    spec.data_collector = { collections: { request: { enabled: collect }, response: { enabled: collect } } };
    return spec;
  }

  function endpointSpec() {
    return {
      name: endpointName(), auth_mode: radio("auth"),
      description: $("description").value.trim(), tags: parseTags(),
    };
  }

  function prepareStep4() {
    const model = chosenModel();
    const spec = deploymentSpec();
    const isNew = radio("endpoint-mode") === "new";
    const rows = [
      ["Model", `${model.id} (${model.flow_type} flow)`],
      ["Endpoint", isNew ? `${endpointName()} (new, ${radio("auth")} auth)` : `${endpointName()} (existing)`],
    ];
    if (isNew && $("description").value.trim()) rows.push(["Description", $("description").value.trim()]);
    if (isNew) {
      const tags = Object.entries(parseTags()).map(([k, v]) => `${k}=${v}`).join(", ");
      if (tags) rows.push(["Tags", tags]);
    }
    rows.push(
      ["Deployment", `${$("deployment-name").value.trim()}${replacing() ? " (replaces the existing one)" : ""}`],
      ["Instances", String(spec.instance_count)],
      ["Inference data collection", $("collect").checked ? "on" : "off"],
      ["Traffic", $("all-traffic").checked ? "all traffic to this deployment" : "traffic unchanged"],
      ["Outputs", spec.environment_variables.PROMPTFLOW_RESPONSE_INCLUDED_FIELDS
        ? JSON.parse(spec.environment_variables.PROMPTFLOW_RESPONSE_INCLUDED_FIELDS).join(", ") : "all"],
    );
    const swaps = [...$("connections").querySelectorAll("select")].filter((s) => s.value)
      .map((s) => `${s.dataset.connection} → ${s.value}`);
    rows.push(["Connections", swaps.length ? swaps.join(", ") : "as in the flow"]);
    $("summary").replaceChildren(...rows.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
    $("progress").replaceChildren();
  }

  // -- navigation -------------------------------------------------------------------------
  function show(next) {
    step = next;
    for (const section of form.querySelectorAll("section[data-step]")) {
      section.hidden = Number(section.dataset.step) !== step;
    }
    for (const item of document.querySelectorAll(".wizard-steps li")) {
      const n = Number(item.dataset.step);
      if (n === step) item.setAttribute("aria-current", "step");
      else item.removeAttribute("aria-current");
      item.classList.toggle("done", n < step);
    }
    $("back").disabled = step === 1 || created;
    $("next").textContent = step === 4 ? "Create" : "Next";
    $("next").hidden = created;
    $("wizard-error").textContent = "";
    const heading = $(`step${step}-title`);
    if (heading && document.activeElement !== document.body) heading.focus();
  }

  $("back").addEventListener("click", () => { if (step > 1) show(step - 1); });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("next");
    button.disabled = true;
    try {
      if (step === 1) {
        if (await validateStep1()) { prepareStep2(); show(2); }
      } else if (step === 2) {
        if (validateStep2()) { prepareStep3(); show(3); }
      } else if (step === 3) {
        if (validateStep3()) { prepareStep4(); show(4); }
      } else {
        await create();
      }
    } catch (error) {
      $("wizard-error").textContent = error.message;
    } finally {
      button.disabled = false;
    }
  });

  function progress(...lines) {
    $("progress").replaceChildren(...lines);
  }

  async function create() {
    const endpoint = endpointName();
    const deployment = $("deployment-name").value.trim();
    const spec = deploymentSpec();
    const allTraffic = $("all-traffic").checked;
    $("back").disabled = true;
    if (radio("endpoint-mode") === "new" && !endpoints.some((e) => e.name === endpoint)) {
      progress(el("p", {}, `Creating endpoint ${endpoint}…`));
      try {
        const result = await call("POST", "/endpoints", { spec: endpointSpec() });
        endpoints.push(result.endpoint);
      } catch (error) {
        $("back").disabled = false;
        progress(el("p", { class: "error" }, `Could not create endpoint ${endpoint}: ${error.message}`));
        return;
      }
    }
    progress(el("p", {}, `Creating deployment ${deployment}…`));
    let started;
    const query = `all_traffic=${allTraffic}`;
    try {
      started = replacing()
        ? await call("PATCH", `/endpoints/${endpoint}/deployments/${deployment}?${query}`, { spec })
        : await call("POST", `/endpoints/${endpoint}/deployments?name=${encodeURIComponent(deployment)}&${query}`,
          { spec });
    } catch (error) {
      $("back").disabled = false;
      progress(el("p", { class: "error" }, `Could not create deployment ${deployment}: ${error.message}`));
      return;
    }
    created = true;
    show(4);
    const begun = Date.now();
    const operation = await follow(started.operation, (op) => {
      if (op.status === "Running") {
        const seconds = Math.round((Date.now() - begun) / 1000);
        progress(el("p", {}, el("span", { class: "state creating" }, "Running"),
          ` ${op.kind || "deployment"} of ${deployment} on ${endpoint}… ${seconds}s`));
      }
    });
    const link = el("a", { href: `/studio/endpoints/${encodeURIComponent(endpoint)}` }, `Open endpoint ${endpoint}`);
    if (operation.status === "Succeeded") {
      progress(el("p", {}, el("span", { class: "state succeeded" }, "Succeeded"),
        ` Deployment ${deployment} is ready. `, link, " · ",
        el("a", { href: `/studio/endpoints/${encodeURIComponent(endpoint)}#test` }, "Test it")));
    } else {
      const error = operation.error || {};
      progress(
        el("p", {}, el("span", { class: "state failed" }, operation.status), ` Deployment ${deployment}: `,
          error.message || "the operation did not succeed.", " ", link),
        error.details && error.details.length
          ? el("pre", { class: "log" }, error.details.map((d) => d.message || JSON.stringify(d)).join("\n")) : null,
      );
    }
  }

  showWhen();
  show(1);
})();
