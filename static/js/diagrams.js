/* Workflow diagrams (Mermaid, vendored): drawn on load and again after htmx swaps a page part. */
mermaid.initialize({ startOnLoad: true, securityLevel: "strict" });
document.body.addEventListener("htmx:afterSettle", function () {
  "use strict";
  mermaid.run();
});
