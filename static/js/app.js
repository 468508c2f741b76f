// Countersign: keep the live inbox honest across reconnects.
(function () {
  "use strict";
  var opened = 0;

  function resync() {
    var inbox = document.getElementById("inbox");
    if (!inbox || !window.htmx) return;
    var url = inbox.dataset.rowsUrl;
    htmx.ajax("GET", url, { target: "#inbox-rows", swap: "innerHTML" });
  }

  document.addEventListener("htmx:wsOpen", function () {
    var dot = document.getElementById("live-status");
    if (dot) dot.classList.add("on");
    // A reconnect may have missed messages: fetch the list again over HTTP.
    if (opened++ > 0) resync();
  });
  document.addEventListener("htmx:wsClose", function () {
    var dot = document.getElementById("live-status");
    if (dot) dot.classList.remove("on");
  });
  document.addEventListener("htmx:oobAfterSwap", function (evt) {
    var target = evt.detail && evt.detail.target;
    if (target && target.id === "inbox-resync") resync();
  });
})();
// Operators' exceptions page: a push says "changed"; fetch the list again.
document.addEventListener("htmx:oobAfterSwap", function (evt) {
  var target = evt.detail && evt.detail.target;
  var page = document.getElementById("ops");
  if (target && target.id === "ops-refresh" && page && window.htmx) {
    htmx.ajax("GET", page.dataset.refreshUrl, { target: "#exceptions", swap: "outerHTML" });
  }
});
