"use strict";
flowport.tabs["monitoring"] = async (panel, page) => {
  panel.append(flowport.el("p", { class: "muted" }, "Coming soon."));
};
