// The Traces page: every endpoint's recent traces (?request_id=... searches for one request's).
"use strict";
document.addEventListener("DOMContentLoaded", () => flowport.traceList(document.getElementById("traces-list"),
  { requestId: new URLSearchParams(location.search).get("request_id") || "" }));
