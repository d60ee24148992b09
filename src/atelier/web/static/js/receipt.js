/* The receipt while the paid, high-resolution version paints: its own progress and its picture
   as it grows (when the status API reports the HD job), then the delivered page. Without this
   file the page refreshes itself every few seconds (a <noscript> refresh). */
(function () {
  "use strict";
  var section = document.querySelector("[data-receipt]");
  if (!section || !section.dataset.statusUrl) return;
  var msg = function (key, values) { return window.atelierMessage(section, key, values); };
  var status = section.querySelector("[data-status]");
  var bar = section.querySelector("[data-progress]");
  var eta = section.querySelector("[data-eta]");
  var image = section.querySelector("[data-receipt-image]");
  var caption = section.querySelector("[data-receipt-caption]");

  function show(state) {
    if (!state.job || state.job.phase !== "hd") return;  // a server that does not describe the HD job: keep the words it drew
    var percent = Math.round((state.job.progress || 0) * 100);  // the HD job's own fraction
    if (state.stage === "queued" || (state.position && state.status === "paid")) {
      status.textContent = msg("queued");
    } else {
      status.textContent = state.stage_text ? msg("painting-stage", { stage: state.stage_text, percent: percent }) : msg("painting", { percent: percent });
    }
    bar.hidden = false;
    bar.value = percent;
    if (state.eta_seconds !== null && state.eta_seconds !== undefined) {
      eta.textContent = state.eta_seconds < 60 ? msg("eta-soon") : msg("eta", { minutes: Math.round(state.eta_seconds / 60) });
      eta.hidden = false;
    } else {
      eta.hidden = true;
    }
    if (image && state.progress_image_url && image.getAttribute("src") !== state.progress_image_url) {
      image.src = state.progress_image_url;
      if (caption) caption.textContent = msg("hd-caption");
    }
  }

  function poll() {
    fetch(section.dataset.statusUrl, { headers: { Accept: "application/json" } }).then(function (response) {
      if (!response.ok) throw new Error(String(response.status));
      return response.json();
    }).then(function (state) {
      if (state.status === "delivered" || state.status === "failed") { window.location.reload(); return; }
      show(state);
      setTimeout(poll, 2000);
    }).catch(function () { setTimeout(poll, 5000); });
  }
  poll();
})();
