// The sign-up form's bot check: a Web Worker (altcha-worker.js) solves a
// challenge from GET /api/challenge (ALTCHA, protocol v2) and the solution
// goes into the form's `altcha` field. Sending waits for it. Without this
// script (or without WebCrypto) the form still works: its signed token and
// a few seconds' patience take the solution's place.
(function () {
  "use strict";
  var form = document.querySelector("form[data-bot-check]");
  if (!form || !window.Worker || !window.crypto || !window.crypto.subtle) return;
  var field = form.querySelector("input[name=altcha]");
  var status = document.getElementById("bot-check");
  var worker = null, expiresAt = 0, sendWhenSolved = false, failed = false;

  function say(text) { if (status) status.textContent = text; }

  function solve() {
    field.value = "";
    if (worker) worker.terminate();
    worker = new Worker("/static/altcha-worker.js");
    worker.onmessage = function (event) {
      if (event.data && event.data.payload) {
        field.value = event.data.payload;
        expiresAt = event.data.expiresAt || 0;
        say("Checked: your browser showed that a person sends this form.");
        if (sendWhenSolved) { sendWhenSolved = false; form.submit(); }
      } else {
        // The form's own token takes over, as without JavaScript.
        failed = true;
        if (sendWhenSolved) { sendWhenSolved = false; form.submit(); return; }
        say("The check that a person sends this form did not finish; you can still send it after a few seconds.");
      }
    };
    worker.postMessage({ url: "/api/challenge" });
    say("Checking that a person sends this form: your browser does a small calculation (nothing is tracked).");
  }

  form.addEventListener("submit", function (event) {
    // A solution that expires within ten seconds is renewed first.
    var fresh = field.value && (!expiresAt || Date.now() / 1000 < expiresAt - 10);
    if (fresh || failed) return;
    event.preventDefault();
    sendWhenSolved = true;
    if (field.value) solve();
    say("Finishing the check, then sending the form…");
  });

  solve();
})();
