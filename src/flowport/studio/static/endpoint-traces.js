// Traces tab: the endpoint's recent traces (each opens the trace page).
"use strict";
flowport.tabs["traces"] = (panel, page) => flowport.traceList(panel, { endpoint: page.name });
