/* Shared by every page: mark that scripts run, and make drop zones take dropped files. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function showPreview(zone, file) {
    var preview = zone.querySelector(".dropzone-preview");
    var title = zone.querySelector(".dropzone-title");
    if (!preview || !file) return;
    if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
    if (file.type.indexOf("image/") === 0) {
      preview.dataset.url = URL.createObjectURL(file);
      preview.src = preview.dataset.url;
      preview.hidden = false;
    } else {
      preview.hidden = true;
    }
    if (title) title.textContent = file.name;
    zone.classList.add("has-file");
  }

  document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
    var input = zone.querySelector("input[type=file]");
    if (!input) return;
    input.addEventListener("change", function () {
      if (input.files && input.files[0]) showPreview(zone, input.files[0]);
    });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.add("is-over");
      });
    });
    ["dragleave", "dragend", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("is-over"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      var files = event.dataTransfer && event.dataTransfer.files;
      if (!files || !files.length) return;
      input.files = files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    });
  });

  /* A translated message from data-msg-* attributes, with {name} placeholders filled in. */
  window.atelierMessage = function (element, key, values) {
    var text = element.dataset["msg" + key.replace(/(^|-)([a-z])/g, function (_, __, c) { return c.toUpperCase(); })] || "";
    Object.keys(values || {}).forEach(function (name) {
      text = text.split("{" + name + "}").join(String(values[name]));
    });
    return text;
  };
})();
