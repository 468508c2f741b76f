// Countersign inbox keyboard: j/k move, a approve, r reject, e edit, x select, Enter open, ? help.
(function () {
  "use strict";
  var current = null;

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("#inbox-rows > article.row")); }

  function select(row) {
    if (current) current.classList.remove("current");
    current = row || null;
    if (current) {
      current.classList.add("current");
      current.focus({ preventScroll: true });
      current.scrollIntoView({ block: "nearest" });
    }
  }

  function move(step) {
    var list = rows();
    if (!list.length) return select(null);
    var index = current ? list.indexOf(current) : -1;
    if (index === -1) return select(list[0]);
    select(list[Math.max(0, Math.min(list.length - 1, index + step))]);
  }

  function ensureCurrent() {
    if (current && document.body.contains(current)) return current;
    move(0);
    return current;
  }

  function approve(row) {
    var button = row.querySelector("button.approve");
    var next = row.nextElementSibling || row.previousElementSibling;
    if (button) button.click();
    select(next && next.matches("article.row") ? next : null);
  }

  function reject(row) {
    var dialog = document.getElementById("reject-dialog");
    var form = document.getElementById("reject-form");
    form.action = "/actions/" + row.dataset.id + "/decide";
    dialog.showModal();
    form.querySelector("input[name=comment]").focus();
  }

  document.addEventListener("keydown", function (event) {
    if (!document.getElementById("inbox")) return;
    var tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || event.metaKey || event.ctrlKey || event.altKey) return;
    if (document.querySelector("dialog[open]")) return;
    var row;
    switch (event.key) {
      case "j": move(1); break;
      case "k": move(-1); break;
      case "a": if ((row = ensureCurrent())) approve(row); break;
      case "r": if ((row = ensureCurrent())) reject(row); break;
      case "e": case "Enter":
        if ((row = ensureCurrent())) window.location = row.querySelector("a.open").href + (event.key === "e" ? "#edit" : "");
        break;
      case "x":
        if ((row = ensureCurrent())) { var box = row.querySelector("input[type=checkbox]"); box.checked = !box.checked; box.dispatchEvent(new Event("change", { bubbles: true })); }
        break;
      case "?": document.getElementById("help").showModal(); break;
      default: return;
    }
    event.preventDefault();
  });

  document.addEventListener("click", function (event) {
    if (event.target.matches("[data-help]")) document.getElementById("help").showModal();
    if (event.target.matches("[data-close]")) event.target.closest("dialog").close();
  });
  // A row removed live while selected: move on to its neighbour.
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    if (current && event.detail && event.detail.target === current) {
      var next = current.nextElementSibling || current.previousElementSibling;
      current = null;
      setTimeout(function () { if (next && document.body.contains(next)) select(next); }, 0);
    }
  });
})();
