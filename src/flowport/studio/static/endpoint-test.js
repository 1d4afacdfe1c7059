"use strict";
flowport.tabs["test"] = async (panel, page) => {
  panel.append(flowport.el("p", { class: "muted" }, "Coming soon."));
};
