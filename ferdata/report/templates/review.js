// Review in the page: click a tile to mark it reject (again to undo); "keep" accepts a suspect's label.
// "Save review.csv" downloads id,label,origin,decision rows (the format `ferdata apply-review` reads).
(function () {
  "use strict";
  var decisions = new Map();
  function tilesOf(id) {
    return Array.prototype.filter.call(document.querySelectorAll("figure[data-id]"), function (el) {
      return el.getAttribute("data-id") === id;
    });
  }
  function show(id) {
    var d = decisions.get(id);
    tilesOf(id).forEach(function (el) {
      el.classList.toggle("rejected", !!d && d.decision === "reject");
      el.classList.toggle("kept-decision", !!d && d.decision === "keep");
      el.setAttribute("aria-pressed", d ? "true" : "false");
      var mark = el.querySelector(".mark");
      if (mark) { mark.textContent = d ? (d.decision === "reject" ? "\u2717 REJECT" : "\u2713 KEEP") : ""; }
    });
    var n = 0, r = 0;
    decisions.forEach(function (v) { n += 1; if (v.decision === "reject") { r += 1; } });
    document.getElementById("review-count").textContent = n + " decisions (" + r + " reject)";
  }
  function toggle(el, decision) {
    var id = el.getAttribute("data-id");
    var cur = decisions.get(id);
    if (cur && cur.decision === decision) { decisions.delete(id); }
    else { decisions.set(id, {decision: decision, label: el.getAttribute("data-label") || "", origin: el.getAttribute("data-origin") || ""}); }
    show(id);
  }
  function cell(v) {
    v = String(v);
    return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
  }
  function csvText() {
    var lines = ["id,label,origin,decision"];
    decisions.forEach(function (v, id) { lines.push([id, v.label, v.origin, v.decision].map(cell).join(",")); });
    return lines.join("\r\n") + "\r\n";
  }
  document.addEventListener("click", function (e) {
    var keep = e.target.closest("button.keep");
    if (keep) { e.preventDefault(); toggle(keep.closest("figure[data-id]"), "keep"); return; }
    var el = e.target.closest("figure[data-id]");
    if (el) { toggle(el, "reject"); }
  });
  document.addEventListener("keydown", function (e) {
    var el = e.target.closest && e.target.closest("figure[data-id]");
    if (el && e.target === el && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); toggle(el, "reject"); }
  });
  document.getElementById("review-save").addEventListener("click", function () {
    var a = document.createElement("a");
    a.download = "review.csv";
    a.href = "data:text/csv;charset=utf-8," + encodeURIComponent(csvText());
    document.body.appendChild(a);
    a.click();
    a.remove();
  });
  document.getElementById("review-clear").addEventListener("click", function () {
    var ids = Array.from(decisions.keys());
    decisions.clear();
    ids.forEach(show);
    show("");
  });
  window.ferdataReview = {csv: csvText, decisions: decisions};
})();
