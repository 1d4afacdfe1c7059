"use strict";
(async () => {
  const { call, el, trafficText } = flowport;
  const body = document.querySelector("#endpoints-table tbody");
  const endpoints = await call("GET", "/endpoints");
  body.replaceChildren();
  if (!endpoints.length) {
    body.append(el("tr", {}, el("td", { colspan: 6, class: "muted" },
      "No endpoints yet. ", el("a", { href: "/studio/deploy" }, "Deploy a model"), " to create one.")));
    return;
  }
  for (const endpoint of endpoints) {
    const [deployments, stats] = await Promise.all([
      call("GET", `/endpoints/${endpoint.name}/deployments`),
      call("GET", `/endpoints/${endpoint.name}/stats`),
    ]);
    const recent = recentTotals(stats, 5);
    body.append(el("tr", {},
      el("th", { scope: "row" }, el("a", { href: `/studio/endpoints/${endpoint.name}` }, endpoint.name)),
      el("td", {}, endpoint.auth_mode),
      el("td", {}, deployments.length ? deployments.map((d) =>
        el("span", { class: `state ${d.provisioning_state.toLowerCase()}` }, `${d.name}: ${d.provisioning_state}`)) : "none"),
      el("td", {}, trafficText(endpoint.traffic)),
      el("td", { class: "number" }, (recent.requests / 5).toFixed(1)),
      el("td", { class: "number" }, recent.requests ? `${(100 * recent.errors / recent.requests).toFixed(1)}%` : "-"),
    ));
  }
})();

// Requests and errors (status >= 400) over the last `minutes` minutes, all deployments.
// stats: {deployments: {name: [{time, requests: {status: count}, total, latency_ms}]}}
function recentTotals(stats, minutes) {
  let requests = 0, errors = 0;
  for (const points of Object.values(stats.deployments || {})) {
    for (const point of points.slice(-minutes)) {
      requests += point.total || 0;
      for (const [status, count] of Object.entries(point.requests || {})) {
        if (Number(status) >= 400) errors += count;
      }
    }
  }
  return { requests, errors };
}
