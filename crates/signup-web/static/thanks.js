// Updates the thank-you page's status until the sign-up is confirmed (from
// the link in the mail, perhaps in another tab). The page works without this
// script (it has a refresh link).
(function () {
  "use strict";
  var el = document.getElementById("status");
  if (!el) return;
  // The texts come with the page (data-text-*), from the same place as its own.
  var texts = {
    pending: el.dataset.textPending,
    unknown: el.dataset.textPending,
    confirmed: el.dataset.textConfirmed,
    deleted: el.dataset.textDeleted
  };
  var tries = 0;
  function poll() {
    if (el.dataset.status === "confirmed" || el.dataset.status === "deleted" || tries++ > 600) return;
    fetch(el.dataset.statusUrl, { headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (body) {
        if (body && texts[body.status]) {
          el.dataset.status = body.status;
          el.textContent = texts[body.status];
          if (body.status === "confirmed" || body.status === "deleted") {
            var refresh = document.getElementById("refresh");
            if (refresh) refresh.hidden = true;
          }
        }
      })
      .catch(function () {})
      .then(function () { setTimeout(poll, tries < 60 ? 1000 : 5000); });
  }
  setTimeout(poll, 500);
})();
