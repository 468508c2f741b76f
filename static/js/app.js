// Countersign: keep the live inbox honest across reconnects.
(function () {
  "use strict";

  // Fetch the live part of the page again over HTTP: the inbox's rows, or the operators' lists.
  // A live message that arrives while a fetch is on its way may be older than the fetch's answer
  // or newer: the answer would overwrite it, so fetch once more after it (never two at a time).
  var fetching = false;
  var again = false;

  function resync() {
    if (!window.htmx) return;
    if (fetching) {
      again = true;
      return;
    }
    var inbox = document.getElementById("inbox");
    var ops = document.getElementById("ops");
    var run = document.getElementById("run");
    var request = null;
    if (inbox) request = htmx.ajax("GET", inbox.dataset.rowsUrl, { target: "#inbox-rows", swap: "innerHTML" });
    else if (ops) request = htmx.ajax("GET", ops.dataset.refreshUrl, { target: "#exceptions", swap: "outerHTML" });
    else if (run) request = htmx.ajax("GET", run.dataset.refreshUrl, { target: run.dataset.liveTarget, swap: "outerHTML" });
    if (!request) return;
    fetching = true;
    request.finally(function () {
      fetching = false;
      if (again) {
        again = false;
        resync();
      }
    });
  }

  document.addEventListener("htmx:wsAfterMessage", function () {
    if (fetching) again = true;
  });

  document.addEventListener("htmx:wsOpen", function () {
    var dot = document.getElementById("live-status");
    if (dot) dot.classList.add("on");
    // Anything pushed between the page's render and this open, or while a socket was
    // away, never reached it: fetch the list again over HTTP (the first open too).
    resync();
  });
  document.addEventListener("htmx:wsClose", function (evt) {
    var dot = document.getElementById("live-status");
    if (dot) dot.classList.remove("on");
    // 4401: the session ended (logout, expiry, password change, deactivation); 4403: no right left.
    // The socket will not reopen by itself: reload, and the server decides what this user sees.
    var code = evt.detail && evt.detail.event && evt.detail.event.code;
    if (code === 4401 || code === 4403) window.location.reload();
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
// A form that failed re-renders its page at the POST URL: show the page's own URL instead,
// and replace the history entry so a reload is a GET of the page, not the post again.
(function () {
  "use strict";
  var page = document.body && document.body.dataset.pageUrl;
  if (page && window.history && window.history.replaceState) window.history.replaceState(null, "", page);
})();
// Rows pushed live are rendered once for everyone: the person who proposed an item may not
// approve it, so their copy says who it waits for instead (the server re-checks every POST).
document.addEventListener("htmx:load", function (evt) {
  var me = document.body.dataset.user;
  var elt = evt.detail && evt.detail.elt;
  if (!me || !elt || !elt.querySelectorAll) return;
  var rows = elt.matches("article.row") ? [elt] : Array.prototype.slice.call(elt.querySelectorAll("article.row"));
  rows.forEach(function (row) {
    var button = row.querySelector("button.approve");
    if (!button || row.dataset.proposer !== me) return;
    var note = document.createElement("span");
    note.className = "muted waiting";
    note.textContent = row.dataset.tier === "0" ? "waiting for a second admin" : "waiting for another reviewer";
    button.replaceWith(note);
  });
});
// Live frames are rendered once per group, for every page a socket may be on: an element for a
// page that is not this one (a row on another filter, a run that is not open) is left out here,
// so htmx never looks for a target that is not on the page (no htmx:oobErrorNoTarget).
if (window.htmx) {
  htmx.defineExtension("live-frames", {
    transformResponse: function (text, xhr) {
      if (xhr) return text; // an HTTP answer is this page's own
      var template = document.createElement("template");
      template.innerHTML = text;
      var kept = [];
      Array.prototype.forEach.call(template.content.children, function (child) {
        var spec = child.getAttribute("hx-swap-oob") || "true";
        var colon = spec.indexOf(":");
        var selector = colon >= 0 ? spec.slice(colon + 1) : child.id ? "#" + CSS.escape(child.id) : null;
        if (!selector || document.querySelector(selector)) kept.push(child.outerHTML);
      });
      return kept.join("");
    },
  });
}
// A new row the page already shows (rendered, or fetched when the socket opened, before its own push
// arrived; or pushed twice) is not added a second time: the copy on the page stays, and with it the
// button of an approval held for its Undo. Checked as each part of a frame is swapped, so a row removed
// earlier in the same frame is added again.
document.addEventListener("htmx:oobBeforeSwap", function (evt) {
  var detail = evt.detail;
  if (!detail || !detail.target || detail.target.id !== "inbox-rows" || !detail.fragment) return;
  Array.prototype.forEach.call(detail.fragment.querySelectorAll("article.row[id]"), function (row) {
    if (document.getElementById(row.id)) row.remove();
  });
});
// The inbox's order, kept as rows arrive live: riskiest first, then the nearest deadline, then the
// oldest (the server's order, approvals.selectors.inbox_for), so a reload shows the same order.
document.addEventListener("htmx:oobAfterSwap", function () {
  var list = document.getElementById("inbox-rows");
  if (!list || !list.dataset.ordered) return;
  var rows = Array.prototype.slice.call(list.querySelectorAll(":scope > article.row"));
  var key = function (row) {
    return [-Number(row.dataset.risk || 0), Number(row.dataset.due || Infinity), Number(row.dataset.id)];
  };
  var sorted = rows.slice().sort(function (a, b) {
    var x = key(a), y = key(b);
    for (var i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
  });
  var moved = sorted.some(function (row, i) { return row !== rows[i]; });
  if (moved) sorted.forEach(function (row) { list.appendChild(row); });
});
// Queue counts per agent, live: each tier's count arrives on its own (approvals.pushes.queue_changed);
// the number shown is the sum of the tiers this person sees.
document.addEventListener("htmx:oobAfterSwap", function (evt) {
  var target = evt.detail && evt.detail.target;
  if (!target || !target.classList || !target.classList.contains("qc")) return;
  // The target swapped out is detached; its replacement has the same id.
  var placed = document.getElementById(target.id);
  var queue = placed && placed.closest("a.queue");
  if (!queue) return;
  var sum = 0;
  queue.querySelectorAll(".qc").forEach(function (qc) { sum += Number(qc.dataset.n || 0); });
  var shown = queue.querySelector(".qc-sum");
  if (shown) shown.textContent = String(sum);
  queue.classList.toggle("idle", sum === 0);
});
// Toasts say what a decision did, then go after a few seconds (app.css fades them).
document.addEventListener("htmx:oobAfterSwap", function () {
  document.querySelectorAll("#notices .toast:not([data-timer])").forEach(function (toast) {
    toast.dataset.timer = "1";
    setTimeout(function () { toast.remove(); }, 6000);
  });
});
// Bulk buttons say how many actions they will decide, and wait for a selection.
(function () {
  "use strict";
  function update() {
    var form = document.getElementById("bulk");
    if (!form) return;
    var count = document.querySelectorAll("input[name=ids][form=bulk]:checked").length;
    form.querySelectorAll("button[name=verdict]").forEach(function (button) {
      var verb = button.value === "approve" ? "Approve" : "Reject";
      button.textContent = count ? verb + " " + count + " selected" : verb + " selected";
      button.disabled = count === 0;
    });
  }
  document.addEventListener("change", function (evt) {
    if (evt.target && evt.target.matches && evt.target.matches("input[name=ids]")) update();
  });
  document.addEventListener("htmx:afterSettle", update);
  document.addEventListener("DOMContentLoaded", update);
})();
// A run page's controls follow the run's status as the live part reports it (the server re-checks every post).
(function () {
  "use strict";
  function follow() {
    var live = document.querySelector("[data-run-status]");
    if (!live) return;
    var status = live.dataset.runStatus;
    document.querySelectorAll(".run-controls form[data-when]").forEach(function (form) {
      form.hidden = form.dataset.when.split(" ").indexOf(status) === -1;
    });
  }
  document.addEventListener("htmx:oobAfterSwap", follow); // a live frame
  document.addEventListener("htmx:afterSwap", follow); // a refetch after the socket reopened
})();
// An approve or reject from the inbox waits a few seconds in this page before it is sent
// (body data-undo-seconds, settings.DECISION_UNDO_SECONDS): until then "Undo" takes it back and
// nothing was decided, so nothing can have run. Leaving the page in the meantime sends nothing.
(function () {
  "use strict";
  function seconds() { return Number(document.body.dataset.undoSeconds || 0); }

  // Rows held for their Undo stay hidden when a live frame, or a list fetched again after a gap, puts a
  // fresh copy of them on the page while the hold lasts.
  var held = {};
  function keepHeldHidden() {
    Object.keys(held).forEach(function (id) {
      var placed = document.getElementById(id);
      if (placed) placed.hidden = true;
    });
  }
  document.addEventListener("htmx:oobAfterSwap", keepHeldHidden);
  document.addEventListener("htmx:afterSwap", keepHeldHidden);

  function hold(label, row, send) {
    var wait = seconds();
    if (!wait) return send();
    var notices = document.getElementById("notices");
    var note = document.createElement("p");
    note.className = "notice hold";
    note.setAttribute("role", "status");
    note.textContent = label + " in " + wait + " s. ";
    var undo = document.createElement("button");
    undo.type = "button";
    undo.className = "link undo";
    undo.textContent = "Undo";
    note.appendChild(undo);
    notices.prepend(note);
    var id = row ? row.id : "";
    if (row) {
      row.hidden = true;
      held[id] = true;
    }
    var timer = setTimeout(function () {
      delete held[id];
      note.remove();
      send();
    }, wait * 1000);
    undo.addEventListener("click", function () {
      clearTimeout(timer);
      delete held[id];
      // The row on the page now: a live frame may have replaced the one that was hidden.
      var placed = id ? document.getElementById(id) : null;
      if (placed) placed.hidden = false;
      note.textContent = label + ": undone, nothing was decided.";
      note.className = "notice toast undone";
      setTimeout(function () { note.remove(); }, 6000);
    });
  }

  function say(text) {
    var note = document.createElement("p");
    note.className = "notice toast";
    note.setAttribute("role", "status");
    note.textContent = text;
    document.getElementById("notices").prepend(note);
    setTimeout(function () { note.remove(); }, 6000);
  }

  var released = new WeakSet(); // approve buttons whose hold is over: htmx sends their click
  document.addEventListener("htmx:confirm", function (evt) {
    var elt = evt.detail && evt.detail.elt;
    if (!elt || !elt.matches || !elt.matches("#inbox-rows article.row button.approve")) return;
    if (released.has(elt)) {
      released.delete(elt);
      return;
    }
    evt.preventDefault();
    var row = elt.closest("article.row");
    var id = row.id;
    var what = row.querySelector("a.open").textContent.trim() + " #" + row.dataset.id;
    hold("Approving " + what, row, function () {
      // Sent from the row on the page now: a live frame (a claim, a warning, the list fetched again) may
      // have replaced the one clicked, and htmx sends nothing for an element no longer on the page.
      var placed = document.getElementById(id);
      var button = placed && placed.querySelector("button.approve");
      if (!button) return say(what + " left your inbox while it was held: nothing was sent.");
      released.add(button);
      button.click();
    });
  });

  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    if (!form || form.id !== "reject-form") return;
    evt.preventDefault();
    var id = form.action.split("/").slice(-2)[0];
    var dialog = document.getElementById("reject-dialog");
    if (dialog && dialog.open) dialog.close();
    // The dialog's form is reused for the next row: send a copy of this one (values and address as now).
    var copy = form.cloneNode(true);
    copy.removeAttribute("id");
    copy.action = form.action;
    copy.hidden = true;
    document.body.appendChild(copy);
    hold("Rejecting #" + id, document.getElementById("action-" + id), function () { copy.submit(); });
  });
})();
// A live frame can take away the element that sent a request while its answer is on the way (another
// reviewer's decision removes the row whose Approve was just clicked). htmx would then look for the
// answer's targets inside the detached element, not the page, and find none (htmx:oobErrorNoTarget,
// htmx:targetError): the toast or the error message would be lost. Such an answer is swapped
// against the page instead: its out-of-band parts and an HX-Retarget land where they belong.
(function () {
  "use strict";
  var watched = new WeakSet();

  function answerForPage(evt) {
    var elt = evt.currentTarget;
    if (document.body.contains(elt)) return;
    evt.preventDefault(); // htmx stops handling this answer; it is handled here
    var xhr = evt.detail.xhr;
    var retarget = xhr.getResponseHeader("HX-Retarget");
    var reswap = xhr.getResponseHeader("HX-Reswap");
    var target = retarget ? document.querySelector(retarget) : evt.detail.target;
    if (target && document.body.contains(target)) {
      var style = reswap || (elt.closest("[hx-swap]") || elt).getAttribute("hx-swap") || "innerHTML";
      htmx.swap(target, xhr.response, { swapStyle: style.split(" ")[0] });
    } else {
      htmx.swap(document.body, xhr.response, { swapStyle: "none" }); // only the out-of-band parts
    }
  }

  document.addEventListener("htmx:beforeRequest", function (evt) {
    var elt = evt.detail && evt.detail.elt;
    if (!elt || watched.has(elt)) return;
    watched.add(elt);
    // On the element itself: once it is detached, events dispatched on it no longer reach the document.
    elt.addEventListener("htmx:beforeOnLoad", answerForPage);
  });
})();
