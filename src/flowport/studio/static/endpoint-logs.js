"use strict";
flowport.tabs["logs"] = async (panel, page) => {
  panel.append(flowport.el("p", { class: "muted" }, "Coming soon."));
};
