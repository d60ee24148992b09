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

  function poll() {
    fetch(section.dataset.statusUrl).then(function (response) { return response.json(); }).then(function (state) {
      bar.value = Math.round((state.progress || 0) * 100);
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
        status.textContent = state.status === "queued" ? msg("queued") : msg("processing", { percent: Math.round(state.progress * 100) });
        setTimeout(poll, 1000);
      }
    }).catch(function () { setTimeout(poll, 3000); });
  }
  if (!player.getAttribute("src")) poll();
})();
