// Updates the thank-you page's status until the sign-up is saved. The page
// works without this script (it has a refresh link).
(function () {
  "use strict";
  var el = document.getElementById("status");
  if (!el) return;
  var texts = {
    pending: "We have received your sign-up; it is being saved.",
    unknown: "We have received your sign-up; it is being saved.",
    saved: "Your sign-up is saved.",
    deleted: "Your details have been erased."
  };
  var tries = 0;
  function poll() {
    if (el.dataset.status === "saved" || el.dataset.status === "deleted" || tries++ > 60) return;
    fetch(el.dataset.statusUrl, { headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (body) {
        if (body && texts[body.status]) {
          el.dataset.status = body.status;
          el.textContent = texts[body.status];
          if (body.status === "saved" || body.status === "deleted") {
            var refresh = document.getElementById("refresh");
            if (refresh) refresh.hidden = true;
          }
        }
      })
      .catch(function () {})
      .then(function () { setTimeout(poll, 1000); });
  }
  setTimeout(poll, 500);
})();
