"use strict";
flowport.tabs["consume"] = async (panel, page) => {
  panel.append(flowport.el("p", { class: "muted" }, "Coming soon."));
};
