/* Approval inbox keyboard shortcuts: j/k move the selection, a approves, r goes to the reject reason.
 *
 * Progressive enhancement: every row is a link and every decision a plain form, so the inbox
 * works without this script. Shortcuts are off while typing and with a modifier key held. */
(function () {
  "use strict";

  const ROWS = "#approval-rows tr[data-approval-id]";
  let selectedId = null;

  function rows() {
    return Array.from(document.querySelectorAll(ROWS));
  }

  function typing(target) {
    return target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT", "BUTTON"].includes(target.tagName);
  }

  function mark(row) {
    for (const other of rows()) {
      other.classList.toggle("selected", other === row);
      other.setAttribute("aria-selected", other === row ? "true" : "false");
    }
  }

  function select(row) {
    selectedId = row.dataset.approvalId;
    mark(row);
    row.scrollIntoView({ block: "nearest" });
    const link = row.querySelector("a.approval-open");
    if (window.htmx && link) {
      window.htmx.ajax("GET", link.getAttribute("hx-get"), { target: "#approval-panel", swap: "innerHTML" });
    }
  }

  function move(step) {
    const all = rows();
    if (!all.length) return;
    const current = all.findIndex((row) => row.dataset.approvalId === selectedId);
    const next = current === -1 ? (step > 0 ? 0 : all.length - 1) : current + step;
    select(all[Math.max(0, Math.min(all.length - 1, next))]);
  }

  /* An element of the panel's decision forms, only when the panel shows the selected request. */
  function inPanel(selector) {
    const panel = document.querySelector("#approval-panel [data-approval-id]");
    if (!panel || (selectedId !== null && panel.dataset.approvalId !== selectedId)) return null;
    return panel.querySelector(selector);
  }

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || typing(event.target)) return;
    if (!document.querySelector("#approval-rows, #approval-panel")) return;
    let target;
    switch (event.key) {
      case "j":
        move(1);
        break;
      case "k":
        move(-1);
        break;
      case "a":
        target = inPanel("form.approve-form");
        if (!target) return;
        target.requestSubmit();
        break;
      case "r":
        target = inPanel("form.reject-form textarea[name=reason]");
        if (!target) return;
        target.focus();
        break;
      default:
        return;
    }
    event.preventDefault();
  });

  /* In the rejection's reason, Enter sends it (Shift+Enter is a new line). */
  document.addEventListener("keydown", (event) => {
    const reason = event.target.closest && event.target.closest(".reject-form textarea");
    if (reason && event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      reason.form.requestSubmit();
    }
  });

  /* A click on a row's link opens it in the panel: remember it as the selection. */
  document.addEventListener("click", (event) => {
    const row = event.target.closest && event.target.closest(ROWS);
    if (row) {
      selectedId = row.dataset.approvalId;
      mark(row);
    }
  });

  /* The rows refresh themselves every few seconds: keep the selection across the swap. */
  document.addEventListener("htmx:afterSwap", () => {
    const row = rows().find((candidate) => candidate.dataset.approvalId === selectedId);
    if (row) mark(row);
  });

  /* A request opened from its link (a click, a tap, Enter) takes the focus to its panel, next to
   * Tab and a screen reader; on a phone the panel sits below the list, out of sight, so its top
   * is brought into view. j/k leave the focus and the scrolling as they are. */
  document.addEventListener("htmx:afterSwap", (event) => {
    const source = event.detail.requestConfig && event.detail.requestConfig.elt;
    const opened = event.detail.target.id === "approval-panel" && source && source.matches("a.approval-open");
    const panel = opened && event.detail.target.querySelector("[data-approval-id]");
    if (!panel) return;
    panel.focus({ preventScroll: true });
    const top = panel.getBoundingClientRect().top;
    if (top < 0 || top > window.innerHeight / 2) panel.scrollIntoView({ block: "start" });
  });

  /* A page opened on one request (the detail page) starts with it selected. */
  document.addEventListener("DOMContentLoaded", () => {
    const panel = document.querySelector("#approval-panel [data-approval-id]");
    if (panel) selectedId = panel.dataset.approvalId;
  });
})();
