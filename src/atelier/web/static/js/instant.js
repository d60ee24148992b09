/* The instant page without reloads: the photo, then its painting, in one place; repaint on every
   style, strength or option change; compare before and after; every style at once; videos.
   The form still works without this file (a POST, then a page with the result). */
(function () {
  "use strict";
  var form = document.getElementById("instant-form");
  if (!form) return;
  var msg = function (key, values) { return window.atelierMessage(form, key, values); };
  var $ = function (selector) { return form.querySelector(selector); };
  var locale = form.dataset.locale;
  var maxSize = parseInt(form.dataset.maxSize, 10) || 1024;
  var photoInput = $("#photo");
  var paintingInput = $("#painting");
  var contentId = $("input[name=content_id]");
  var ownId = $("input[name=own_id]");
  var strength = $("#strength");
  var strengthValue = $("#strength-value");
  var preserve = $("#preserve");
  var blendStyle = $("#blend-style");
  var blend = $("#blend");
  var blendValue = $("#blend-value");
  var stage = document.getElementById("result");
  var empty = stage.querySelector("[data-stage-empty]");
  var compare = stage.querySelector("[data-compare]");
  var resultImage = document.getElementById("result-image");
  var beforeImage = document.getElementById("before-image");
  var compareRange = document.getElementById("compare");
  var compareControl = stage.querySelector("[data-compare-control]");
  var actions = stage.querySelector("[data-result-actions]");
  var download = document.getElementById("download");
  var commissionLink = document.getElementById("commission-link");
  var sizeNote = stage.querySelector("[data-size-note]");
  var status = document.getElementById("status");
  var sheet = stage.querySelector("[data-sheet]");
  var sheetGrid = stage.querySelector("[data-sheet-grid]");
  var sheetButton = $("[data-sheet-button]");
  var video = stage.querySelector("[data-video]");
  var ownTile = $(".own-tile");
  var ownName = $("[data-own-name]");
  var photoSize = { width: parseInt(contentId.dataset.width, 10) || 0, height: parseInt(contentId.dataset.height, 10) || 0 };
  var latest = 0;
  var resultUrl = null;
  var timer = null;
  var painted = chosenStyle();  // the last style that painted (a failed own painting goes back to it)

  /* ---- small helpers -------------------------------------------------------------------- */

  function setStatus(text, kind) {
    status.textContent = text;
    status.classList.toggle("is-busy", kind === "busy");
    status.classList.toggle("is-error", kind === "error");
    if (kind === "error") reveal(status);
  }

  /* Bring ``element`` into view if it is not: with the whole picture around it when that fits
     (the picture and the line under it are what a person watches). */
  function reveal(element) {
    var box = element.getBoundingClientRect();
    if (box.top >= 0 && box.bottom <= window.innerHeight) return;
    var whole = stage.getBoundingClientRect().height <= window.innerHeight;
    (whole ? stage : element).scrollIntoView({ block: "center" });
  }

  function show(view) {
    empty.hidden = view !== "empty";
    compare.hidden = view !== "picture";
    sheet.hidden = view !== "sheet";
    video.hidden = view !== "video";
    form.classList.toggle("has-photo", view !== "empty");
    form.classList.toggle("view-sheet", view === "sheet");
    form.classList.toggle("view-video", view === "video");
  }

  function chosenStyle() {
    var checked = form.querySelector("input[name=style]:checked");
    return checked ? checked.value : "";
  }

  function kindOf(style) {
    var radio = form.querySelector("input[name=style][value='" + style + "']");
    return radio ? radio.dataset.kind : "";
  }

  function choose(style) {
    var radio = form.querySelector("input[name=style][value='" + style + "']");
    if (radio) radio.checked = true;
  }

  function decimal(value) {
    return locale === "es" ? String(value).replace(".", ",") : String(value);
  }

  function errorText(response, body) {
    if (response.status === 413) return msg("too-big");
    if (body && body.error && body.error.code === "bad_image") return msg("unreadable");
    if (response.status >= 500) return msg("failed");
    return (body && body.error && body.error.message) || msg("failed");
  }

  function readError(response) {
    return response.json().catch(function () { return null; }).then(function (body) {
      throw new Error(errorText(response, body));
    });
  }

  function failure(error) {
    // A network error (TypeError) has no words for a person.
    return error instanceof TypeError ? msg("failed") : error.message;
  }

  /* The bot check's answer, when the server asks for one: its widget fills a field of the form.
     The first accepted request gives this browser a pass for the next ones. */
  function withCaptcha(data) {
    ["cf-turnstile-response", "g-recaptcha-response", "h-captcha-response"].forEach(function (name) {
      var field = form.querySelector("[name='" + name + "']");
      if (field && field.value) data.append(name, field.value);
    });
    return data;
  }

  function captchaToken() {
    var token = "";
    ["cf-turnstile-response", "g-recaptcha-response", "h-captcha-response"].forEach(function (name) {
      var field = form.querySelector("[name='" + name + "']");
      if (field && field.value) token = field.value;
    });
    return token;
  }

  /* A file through this app: the way without S3. */
  function uploadThroughApp(file, kind) {
    var data = new FormData();
    data.append("file", file);
    data.append("kind", kind);
    return fetch("/api/v1/uploads", { method: "POST", body: withCaptcha(data) }).then(function (response) {
      if (!response.ok) return readError(response);
      return response.json();
    });
  }

  /* With S3 storage, straight to the bucket (direct-upload.js), its progress on the status line. */
  function uploadDirect(file, kind) {
    return window.atelierDirectUpload(file, kind, {
      messages: { tooBig: msg("too-big"), unreadable: msg("unreadable"), failed: msg("failed") },
      captcha: captchaToken(),
      onProgress: function (percent) { setStatus(msg("uploading-percent", { percent: percent }), "busy"); }
    });
  }

  function upload(file, kind) {
    if (form.dataset.directUpload && file.type && window.atelierDirectUpload) return uploadDirect(file, kind);
    return uploadThroughApp(file, kind);
  }

  /* The picture is shown once the browser can draw it (a file it cannot draw, such as a TIFF,
     leaves the stage as it was until the painting comes back). */
  function whenDrawable(url) {
    return new Promise(function (resolve, reject) {
      var probe = new Image();
      probe.onload = function () { resolve(url); };
      probe.onerror = reject;
      probe.src = url;
    });
  }

  function updateCommissionLink() {
    if (commissionLink && contentId.value) {
      commissionLink.href = "/" + locale + "/commission?photo=" + encodeURIComponent(contentId.value);
    }
  }

  function options(query) {
    if (preserve && preserve.checked) query.set("preserve_color", "true");
    if (blendStyle && blendStyle.value && kindOf(chosenStyle()) === "painting") {
      query.set("blend_name", blendStyle.value);
      query.set("blend", (blend.value / 100).toFixed(2));
    }
    return query;
  }

  /* The address says what is on screen, so that a reload (or the form without scripts) shows
     the same painting. */
  function remember() {
    var query = new URLSearchParams({ photo: contentId.value, style: chosenStyle(), strength: strength.value });
    if (ownId.value) query.set("own", ownId.value);
    if (preserve && preserve.checked) query.set("preserve", "1");
    if (blendStyle && blendStyle.value) { query.set("blend_style", blendStyle.value); query.set("blend", blend.value); }
    history.replaceState(null, "", "/" + locale + "/?" + query.toString());
  }

  function noteSize(width, height, template) {
    var longest = Math.max(photoSize.width, photoSize.height);
    if (!width || !longest || (width >= photoSize.width && height >= photoSize.height)) {
      sizeNote.hidden = true;
      return;
    }
    sizeNote.textContent = msg(template || "reduced", {
      width: width, height: height, photo_width: photoSize.width, photo_height: photoSize.height, max: maxSize
    });
    sizeNote.hidden = false;
  }

  /* ---- painting --------------------------------------------------------------------------- */

  function paint() {
    if (!contentId.value) { setStatus(msg("choose-photo"), "error"); return; }
    var style = chosenStyle();
    var query = new URLSearchParams({ content_id: contentId.value, alpha: (strength.value / 100).toFixed(2) });
    if (style === "own") {
      if (!ownId.value) { setStatus(msg("choose-painting")); return; }
      query.set("style_id", ownId.value);
    } else {
      query.set("style_name", style);
    }
    options(query);
    var ticket = ++latest;
    show("picture");
    setStatus(msg("painting"), "busy");
    compare.classList.add("is-busy");
    fetch("/api/v1/stylize?" + query.toString()).then(function (response) {
      if (!response.ok) return readError(response);
      var seconds = parseFloat(response.headers.get("X-Stylize-Ms") || "0") / 1000;
      var size = (response.headers.get("X-Image-Size") || "").split("x");
      return response.blob().then(function (blob) {
        return {
          blob: blob,
          seconds: seconds.toFixed(seconds < 1 ? 2 : 1),
          cached: response.headers.get("X-Result-Cached") === "1",
          width: parseInt(size[0], 10) || 0,
          height: parseInt(size[1], 10) || 0
        };
      });
    }).then(function (result) {
      if (ticket !== latest) return;
      if (resultUrl) URL.revokeObjectURL(resultUrl);
      resultUrl = URL.createObjectURL(result.blob);
      resultImage.removeAttribute("width");
      resultImage.removeAttribute("height");
      resultImage.src = resultUrl;
      download.href = resultUrl;
      download.setAttribute("download", "atelier-" + (style === "own" ? "painting" : style) + ".jpg");
      compare.classList.remove("is-busy");
      compareControl.classList.add("is-ready");
      actions.hidden = false;
      painted = style;
      // A cached filter picture blended again takes no painting time: say so, not "0.00 s".
      setStatus(result.cached ? msg("cached") : msg("done", { seconds: decimal(result.seconds) }));
      noteSize(result.width, result.height);
      remember();
      resultImage.decode().then(function () { reveal(resultImage); }).catch(function () {});
    }).catch(function (error) {
      if (ticket !== latest) return;
      compare.classList.remove("is-busy");
      setStatus(failure(error), "error");
    });
  }

  function paintSoon(delay) {
    clearTimeout(timer);
    timer = setTimeout(paint, delay);
  }

  /* ---- the photo -------------------------------------------------------------------------- */

  /* What the stage shows, to put back when a new photo turns out to be unusable: the last good
     photo and its painting stay, and the file field forgets the bad file. */
  function snapshot() {
    return {
      view: !empty.hidden ? "empty" : !sheet.hidden ? "sheet" : !video.hidden ? "video" : "picture",
      after: resultImage.getAttribute("src"),
      before: beforeImage.getAttribute("src"),
      hasBefore: compare.classList.contains("has-before"),
      actions: actions.hidden,
      note: sizeNote.hidden
    };
  }

  function restore(saved) {
    latest++;  // a painting on its way is for the photo that failed: drop it
    show(saved.view);
    if (saved.after) resultImage.src = saved.after; else resultImage.removeAttribute("src");
    if (saved.before) beforeImage.src = saved.before; else beforeImage.removeAttribute("src");
    compare.classList.toggle("has-before", saved.hasBefore);
    compare.classList.remove("is-busy");
    actions.hidden = saved.actions;
    sizeNote.hidden = saved.note;
  }

  photoInput.addEventListener("change", function () {
    var file = photoInput.files && photoInput.files[0];
    if (!file) return;
    if (file.type.indexOf("video/") === 0 || /\.(mp4|mov|webm|mkv)$/i.test(file.name)) {
      startVideo(file);
      return;
    }
    var saved = snapshot();
    var local = URL.createObjectURL(file);
    var ticket = ++latest;
    setStatus(msg("uploading"), "busy");
    whenDrawable(local).then(function () {
      if (ticket !== latest) return;
      show("picture");
      resultImage.removeAttribute("width");
      resultImage.removeAttribute("height");
      resultImage.src = local;
      compare.classList.remove("has-before");
      compare.classList.add("is-busy");
      actions.hidden = true;
      sizeNote.hidden = true;
    }).catch(function () {});
    upload(file, "content").then(function (info) {
      contentId.value = info.id;
      photoSize = { width: info.width || 0, height: info.height || 0 };
      beforeImage.src = local;
      compare.classList.add("has-before");
      if (sheetButton) sheetButton.hidden = false;
      updateCommissionLink();
      paint();
    }).catch(function (error) {
      restore(saved);
      photoInput.value = "";
      setStatus(failure(error), "error");
    });
  });

  /* ---- your own painting ---------------------------------------------------------------- */

  paintingInput.addEventListener("change", function () {
    var file = paintingInput.files && paintingInput.files[0];
    if (!file) return;
    var before = { tile: Array.prototype.slice.call(ownTile.childNodes), painting: ownTile.classList.contains("has-painting"), id: ownId.value, name: ownName.textContent };
    $("#style-own").checked = true;
    showOwnPainting(file);
    ownName.textContent = file.name;
    setStatus(msg("uploading"), "busy");
    upload(file, "style").then(function (info) {
      ownId.value = info.id;
      if (contentId.value) paint(); else setStatus(msg("choose-photo"));
    }).catch(function (error) {
      // Back to how it was: no broken tile left chosen.
      ownTile.replaceChildren.apply(ownTile, before.tile);
      ownTile.classList.toggle("has-painting", before.painting);
      ownId.value = before.id;
      ownName.textContent = before.name;
      paintingInput.value = "";
      if (!before.id) choose(painted !== "own" ? painted : "candy");
      setStatus(failure(error), "error");
    });
  });

  /* The chosen painting takes the place of the "+" in its style card. */
  function showOwnPainting(file) {
    var image = document.createElement("img");
    image.src = URL.createObjectURL(file);
    image.alt = "";
    ownTile.replaceChildren(image);
    ownTile.classList.add("has-painting");
  }

  /* ---- styles and options --------------------------------------------------------------- */

  form.querySelectorAll("input[name=style]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      if (radio.value === "own" && !ownId.value) { setStatus(msg("choose-painting")); return; }
      if (!contentId.value) { setStatus(msg("choose-photo")); return; }
      // Arrow keys walk the strip one card per press: paint where they stop.
      paintSoon(180);
    });
  });

  strength.addEventListener("input", function () {
    strengthValue.textContent = strength.value + " %";
    if (contentId.value) paintSoon(250);
  });

  if (preserve) preserve.addEventListener("change", function () { if (contentId.value) paintSoon(0); });
  if (blendStyle) {
    blendStyle.addEventListener("change", function () { if (contentId.value) paintSoon(0); });
    blend.addEventListener("input", function () {
      blendValue.textContent = blend.value + " %";
      if (contentId.value && blendStyle.value) paintSoon(250);
    });
  }

  compareRange.addEventListener("input", function () {
    compare.style.setProperty("--split", compareRange.value + "%");
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!contentId.value) { setStatus(msg("choose-photo"), "error"); return; }
    paint();
  });

  /* ---- every style on my photo ------------------------------------------------------------ */

  if (sheetButton) {
    sheetButton.hidden = !contentId.value;
    sheetButton.addEventListener("click", function () {
      if (!contentId.value) { setStatus(msg("choose-photo"), "error"); return; }
      var ticket = ++latest;
      setStatus(msg("sheet"), "busy");
      sheetButton.disabled = true;
      fetch("/api/v1/sheet?" + new URLSearchParams({ content_id: contentId.value, locale: locale, format: "json" })).then(function (response) {
        if (!response.ok) return readError(response);
        return response.json();
      }).then(function (result) {
        if (ticket !== latest) return;
        var tiles = result.tiles.filter(function (tile) { return tile.kind !== "photo"; });
        sheetGrid.style.setProperty("--tile-ratio", result.width + " / " + result.height);
        sheetGrid.replaceChildren.apply(sheetGrid, tiles.map(function (tile) {
          var button = document.createElement("button");
          button.type = "button";
          button.className = "sheet-tile";
          button.dataset.style = tile.name;
          var image = document.createElement("img");
          image.src = tile.image;
          image.alt = "";
          var title = document.createElement("span");
          title.textContent = tile.title;
          button.append(image, title);
          button.addEventListener("click", function () {
            choose(tile.name);
            paint();
          });
          return button;
        }));
        show("sheet");
        setStatus(msg("sheet-done", { seconds: decimal(result.seconds.toFixed(1)) }));
        reveal(sheet);
      }).catch(function (error) {
        if (ticket !== latest) return;
        setStatus(failure(error), "error");
      }).finally(function () { sheetButton.disabled = false; });
    });
  }

  /* ---- the page as the server drew it ------------------------------------------------------ */

  /* A page opened with ?photo=... (after a reload, or the form without scripts) shows its
     before/after at once. */
  if (contentId.value && beforeImage.getAttribute("src")) {
    compare.classList.add("has-before");
    compareControl.classList.add("is-ready");
  }
  if (ownName) ownName.hidden = false;
  updateCommissionLink();

  /* ---- videos: a job, followed until the painted clip can be played and downloaded -------- */

  function startVideo(file) {
    var bar = video.querySelector("[data-video-progress]");
    var player = video.querySelector("[data-video-player]");
    latest++;
    show("video");
    player.hidden = true;
    bar.hidden = false;
    bar.value = 0;
    actions.hidden = true;
    sizeNote.hidden = true;
    setStatus(msg("uploading"), "busy");
    var data = new FormData();
    var style = chosenStyle();
    if (style === "own" && ownId.value) data.append("style_id", ownId.value);
    else data.append("style_name", style === "own" ? "candy" : style);
    data.append("alpha", (strength.value / 100).toFixed(2));
    data.append("locale", locale);
    // With S3 the clip goes to the bucket first (the biggest files of all), then the job names it.
    var sent = form.dataset.directUpload && file.type && window.atelierDirectUpload
      ? uploadDirect(file, "video").then(function (info) { data.append("content_id", info.id); })
      : Promise.resolve(data.append("content", file));
    sent.then(function () {
      return fetch("/api/v1/videos", { method: "POST", body: withCaptcha(data) });
    }).then(function (response) {
      if (!response.ok) return readError(response);
      return response.json();
    }).then(function (job) {
      setStatus(msg("video"), "busy");
      var poll = function () {
        fetch(job.status_url).then(function (response) { return response.json(); }).then(function (state) {
          bar.value = Math.round((state.progress || 0) * 100);
          if (state.status === "done") {
            setStatus(msg("video-done"));
            bar.hidden = true;
            player.src = state.result_url;
            player.hidden = false;
            download.href = state.result_url;
            download.setAttribute("download", "atelier-video.mp4");
            actions.hidden = false;
            if (state.width && state.source_width) {
              photoSize = { width: state.source_width, height: state.source_height };
              noteSize(state.width, state.height, "video-reduced");
            }
          } else if (state.status === "failed") {
            bar.hidden = true;
            setStatus(msg("failed"), "error");
          } else {
            if (state.status === "processing") setStatus(msg("video-progress", { percent: bar.value }), "busy");
            setTimeout(poll, 1000);
          }
        }).catch(function () { setTimeout(poll, 3000); });
      };
      poll();
    }).catch(function (error) {
      show(contentId.value ? "picture" : "empty");
      photoInput.value = "";
      setStatus(failure(error), "error");
    });
  }
})();
