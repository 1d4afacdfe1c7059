// The Traces page: every endpoint's recent traces.
"use strict";
document.addEventListener("DOMContentLoaded", () => flowport.traceList(document.getElementById("traces-list"), {}));
