/* A commission's status page: follow the painting live with server-sent events, and when the
   preview is ready offer the way to it. Without this file the page refreshes itself every few
   seconds (a <noscript> refresh). */
(function () {
  "use strict";
  var section = document.querySelector("[data-artwork]");
  // A finished page (no events address) has nothing more to follow.
  if (!section || !section.dataset.events || !window.EventSource) return;
  var msg = function (key, values) { return window.atelierMessage(section, key, values); };
  var status = section.querySelector("[data-status]");
  var bar = section.querySelector("[data-progress]");
  var eta = section.querySelector("[data-eta]");
  var canvas = section.querySelector("[data-canvas]");
  var image = section.querySelector("[data-canvas-image]");
  var next = section.querySelector("[data-next-preview]");

  /* The bar is the current job's own fraction (the preview's); "progress" is the whole
     commission's, of which the preview is the first part. */
  function fraction(state) {
    return state.job ? state.job.progress : state.progress;
  }

  function describe(state) {
    var percent = Math.round(fraction(state) * 100);
    if (state.status === "queued") {
      if (state.stage === "retrying") return msg("retrying");
      return state.position && state.position > 1 ? msg("queued", { position: state.position }) : msg("queued-next");
    }
    if (state.status === "painting") {
      return state.stage_text ? msg("painting-stage", { stage: state.stage_text, percent: percent }) : msg("painting", { percent: percent });
    }
    if (state.status === "preview_ready") return msg("ready");
    return msg("failed");
  }

  /* The time left, when the server has an estimate (it gets better as the painting goes). */
  function remaining(state) {
    // While it waits too: the estimate then counts the jobs ahead of it.
    if (state.eta_seconds === null || state.eta_seconds === undefined || (state.status !== "painting" && state.status !== "queued")) return "";
    return state.eta_seconds < 60 ? msg("eta-soon") : msg("eta", { minutes: Math.round(state.eta_seconds / 60) });
  }

  function show(state) {
    status.textContent = describe(state);
    bar.value = Math.round(fraction(state) * 100);
    var final = state.status === "preview_ready" || state.status === "failed";
    bar.hidden = final;
    eta.textContent = remaining(state);
    eta.hidden = !eta.textContent;
    section.querySelectorAll("[data-while-working]").forEach(function (element) { element.hidden = final; });
    // Once the preview is ready the canvas shows the preview itself (the picture they will buy).
    var picture = final && state.preview_url ? state.preview_url : state.progress_image_url;
    if (picture && image.getAttribute("src") !== picture) {
      image.src = picture;
      canvas.hidden = false;
    }
    if (next && state.preview_page_url) {
      next.href = state.preview_page_url;
      next.hidden = false;
    }
  }

  var source = new EventSource(section.dataset.events);
  source.addEventListener("progress", function (event) { show(JSON.parse(event.data)); });
  source.addEventListener("done", function (event) {
    var state = JSON.parse(event.data);
    show(state);
    source.close();
    // A paid or failed artwork's page has other next steps: the server draws them.
    if (state.status !== "preview_ready") window.location.reload();
  });
  source.onerror = function () {
    if (source.readyState !== EventSource.CLOSED) status.textContent = msg("lost");
  };
})();
