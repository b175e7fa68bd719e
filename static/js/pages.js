/* What every page shares. An answer that carries a message for the user (a refusal, a conflict,
 * a form's errors) is swapped in like a success where the page names its status in
 * data-swap-statuses (htmx leaves 4xx answers out by default). A file, not inline handlers:
 * the Content-Security-Policy allows scripts from this site only. */
document.addEventListener("htmx:beforeSwap", function (event) {
  "use strict";
  const host = event.target.closest("[data-swap-statuses]");
  if (host && host.dataset.swapStatuses.split(" ").map(Number).includes(event.detail.xhr.status)) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
