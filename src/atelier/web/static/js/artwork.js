/* A commission's status page: follow the painting live with server-sent events. Without this
   file the page refreshes itself every few seconds (a <noscript> refresh). */
(function () {
  "use strict";
  var section = document.querySelector("[data-artwork]");
  if (!section || !window.EventSource) return;
  var msg = function (key, values) { return window.atelierMessage(section, key, values); };
  var status = section.querySelector("[data-status]");
  var bar = section.querySelector("[data-progress]");
  var canvas = section.querySelector("[data-canvas]");
  var image = section.querySelector("[data-canvas-image]");

  function describe(state) {
    if (state.status === "queued") {
      if (state.stage === "retrying") return msg("retrying");
      return state.position && state.position > 1 ? msg("queued", { position: state.position }) : msg("queued-next");
    }
    if (state.status === "painting") {
      return msg("painting", { percent: Math.round(state.progress * 100) });
    }
    if (state.status === "preview_ready") return msg("ready");
    return msg("failed");
  }

  function show(state) {
    status.textContent = describe(state);
    bar.value = Math.round(state.progress * 100);
    var final = state.status === "preview_ready" || state.status === "failed";
    bar.hidden = final;
    section.querySelectorAll("[data-while-working]").forEach(function (element) { element.hidden = final; });
    if (state.progress_image_url && image.getAttribute("src") !== state.progress_image_url) {
      image.src = state.progress_image_url;
      canvas.hidden = false;
    }
  }

  var source = new EventSource(section.dataset.events);
  source.addEventListener("progress", function (event) { show(JSON.parse(event.data)); });
  source.addEventListener("done", function (event) {
    show(JSON.parse(event.data));
    source.close();
    if (JSON.parse(event.data).status === "failed") window.location.reload();
  });
  source.onerror = function () {
    if (source.readyState !== EventSource.CLOSED) status.textContent = msg("lost");
  };
})();
