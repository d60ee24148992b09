/* A video job's page: follow its progress until the painted clip can be played. */
(function () {
  "use strict";
  var section = document.querySelector("[data-video]");
  if (!section) return;
  var msg = function (key, values) { return window.atelierMessage(section, key, values); };
  var status = section.querySelector("[data-status]");
  var bar = section.querySelector("[data-progress]");
  var player = section.querySelector("[data-player]");
  var download = section.querySelector("[data-download]");
  var note = section.querySelector("[data-size-note]");
  var eta = section.querySelector("[data-eta]");

  /* The time left, when the server has an estimate (it gets better as the frames are painted). */
  function remaining(state) {
    if (state.eta_seconds === null || state.eta_seconds === undefined || state.status === "done" || state.status === "failed") return "";
    return state.eta_seconds < 60 ? msg("eta-soon") : msg("eta", { minutes: Math.round(state.eta_seconds / 60) });
  }

  function poll() {
    fetch(section.dataset.statusUrl).then(function (response) { return response.json(); }).then(function (state) {
      bar.value = Math.round((state.progress || 0) * 100);
      if (eta) {
        eta.textContent = remaining(state);
        eta.hidden = !eta.textContent;
      }
      if (state.status === "done") {
        status.textContent = msg("done");
        bar.hidden = true;
        player.src = state.result_url;
        player.hidden = false;
        download.href = state.result_url;
        download.hidden = false;
        if (state.width && state.source_width && state.width < state.source_width) {
          note.textContent = msg("reduced", { width: state.width, height: state.height, photo_width: state.source_width, photo_height: state.source_height });
          note.hidden = false;
        }
      } else if (state.status === "failed") {
        status.textContent = msg("failed");
        bar.hidden = true;
      } else {
        var percent = Math.round(state.progress * 100);
        if (state.status === "queued") status.textContent = state.stage_text || msg("queued");
        else status.textContent = state.stage_text ? msg("painting-stage", { stage: state.stage_text, percent: percent }) : msg("processing", { percent: percent });
        setTimeout(poll, 1000);
      }
    }).catch(function () { setTimeout(poll, 3000); });
  }
  if (!player.getAttribute("src")) poll();
})();
