"use strict";
flowport.tabs["details"] = async (panel, page) => {
  panel.append(flowport.el("p", { class: "muted" }, "Coming soon."));
};
