// The endpoint page: tabs (keyboard: arrows, Home, End), the endpoint's data, one script per tab.
// A tab script registers flowport.tabs[name] = async (panel, page) => {...}; it runs when its
// tab is first shown. page = {name, endpoint, deployments, reload()}; reload() refreshes both.
"use strict";
flowport.tabs = {};

(() => {
  const name = JSON.parse(document.getElementById("endpoint-name").textContent);
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const shown = new Set();
  const page = {
    name,
    endpoint: null,
    deployments: [],
    async reload() {
      [page.endpoint, page.deployments] = await Promise.all([
        flowport.call("GET", `/endpoints/${name}`),
        flowport.call("GET", `/endpoints/${name}/deployments`),
      ]);
      document.getElementById("endpoint-summary").textContent =
        `${page.endpoint.auth_mode} auth · traffic: ${flowport.trafficText(page.endpoint.traffic)}`;
      return page;
    },
  };

  // A tab clicked before the page's first load waits for it (its script needs the data).
  let loaded;
  const firstLoad = new Promise((resolve) => { loaded = resolve; });

  async function select(tab, focus) {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
    }
    if (focus) tab.focus();
    const key = tab.dataset.tab;
    history.replaceState(null, "", `#${key}`);
    if (!shown.has(key) && flowport.tabs[key]) {
      shown.add(key);
      await firstLoad;
      const panel = document.getElementById(`panel-${key}`);
      try {
        await flowport.tabs[key](panel, page);
      } catch (error) {
        panel.append(flowport.el("p", { class: "error", role: "alert" }, error.message));
      }
    }
  }

  for (const [index, tab] of tabs.entries()) {
    tab.addEventListener("click", () => select(tab, false));
    tab.addEventListener("keydown", (event) => {
      const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 };
      if (event.key in moves) {
        event.preventDefault();
        select(tabs[(moves[event.key] + tabs.length) % tabs.length], true);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", async () => {
    try {
      await page.reload();
    } finally {
      loaded();
    }
    const wanted = tabs.find((t) => `#${t.dataset.tab}` === location.hash) || tabs[0];
    select(wanted, false);
  });
})();
