/* The instant page without reloads: upload once, repaint on every style or strength change,
   compare before and after, download. The form still works without this file. */
(function () {
  "use strict";
  var form = document.getElementById("instant-form");
  if (!form) return;
  var msg = function (key, values) { return window.atelierMessage(form, key, values); };
  var locale = form.dataset.locale;
  var photoInput = form.querySelector("#photo");
  var paintingInput = form.querySelector("#painting");
  var contentId = form.querySelector("input[name=content_id]");
  var ownId = form.querySelector("input[name=own_id]");
  var strength = form.querySelector("#strength");
  var strengthValue = form.querySelector("#strength-value");
  var result = document.getElementById("result");
  var status = result.querySelector(".status");
  var compare = result.querySelector("[data-compare]");
  var resultImage = document.getElementById("result-image");
  var beforeImage = document.getElementById("before-image");
  var compareRange = document.getElementById("compare");
  var compareControl = result.querySelector(".compare-control");
  var download = document.getElementById("download");
  var commissionLink = document.getElementById("commission-link");
  var videoResult = document.getElementById("video-result");
  var latest = 0;
  var resultUrl = null;
  var timer = null;

  function setStatus(element, text, busy) {
    element.textContent = text;
    element.classList.toggle("is-busy", !!busy);
  }

  function chosenStyle() {
    var checked = form.querySelector("input[name=style]:checked");
    return checked ? checked.value : "";
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

  /* The bot check's answer, when the server asks for one: its widget fills a field of the form.
     The first accepted request gives this browser a pass for the next ones. */
  function withCaptcha(data) {
    ["cf-turnstile-response", "g-recaptcha-response", "h-captcha-response"].forEach(function (name) {
      var field = form.querySelector("[name='" + name + "']");
      if (field && field.value) data.append(name, field.value);
    });
    return data;
  }

  function upload(file, kind) {
    var data = new FormData();
    data.append("file", file);
    data.append("kind", kind);
    return fetch("/api/v1/uploads", { method: "POST", body: withCaptcha(data) }).then(function (response) {
      if (!response.ok) return readError(response);
      return response.json();
    });
  }

  function showResult() {
    result.hidden = false;
  }

  function updateCommissionLink() {
    if (commissionLink && contentId.value) {
      commissionLink.href = "/" + locale + "/commission?photo=" + encodeURIComponent(contentId.value);
    }
  }

  function remember() {
    var query = new URLSearchParams({ photo: contentId.value, style: chosenStyle(), strength: strength.value });
    if (ownId.value) query.set("own", ownId.value);
    history.replaceState(null, "", "/" + locale + "/?" + query.toString());
  }

  function paint() {
    if (!contentId.value) { setStatus(status, msg("choose-photo")); return; }
    var style = chosenStyle();
    var query = new URLSearchParams({ content_id: contentId.value, alpha: (strength.value / 100).toFixed(2) });
    if (style === "own") {
      if (!ownId.value) { showResult(); setStatus(status, msg("choose-painting")); paintingInput.focus(); return; }
      query.set("style_id", ownId.value);
    } else {
      query.set("style_name", style);
    }
    var ticket = ++latest;
    showResult();
    setStatus(status, msg("painting"), true);
    compare.classList.add("is-busy");
    fetch("/api/v1/stylize?" + query.toString()).then(function (response) {
      if (!response.ok) return readError(response);
      var elapsed = parseFloat(response.headers.get("X-Stylize-Ms") || "0") / 1000;
      var seconds = elapsed.toFixed(elapsed < 1 ? 2 : 1);
      return response.blob().then(function (blob) { return { blob: blob, seconds: seconds }; });
    }).then(function (painted) {
      if (ticket !== latest) return;
      if (resultUrl) URL.revokeObjectURL(resultUrl);
      resultUrl = URL.createObjectURL(painted.blob);
      resultImage.src = resultUrl;
      download.href = resultUrl;
      download.setAttribute("download", "atelier-" + (style === "own" ? "painting" : style) + ".jpg");
      compare.classList.remove("is-busy");
      compareControl.classList.add("is-ready");
      setStatus(status, msg("done", { seconds: painted.seconds.replace(".", locale === "es" ? "," : ".") }));
      remember();
    }).catch(function (error) {
      if (ticket !== latest) return;
      compare.classList.remove("is-busy");
      setStatus(status, error.message);
    });
  }

  function paintSoon(delay) {
    clearTimeout(timer);
    timer = setTimeout(paint, delay);
  }

  photoInput.addEventListener("change", function () {
    var file = photoInput.files && photoInput.files[0];
    if (!file) return;
    if (file.type.indexOf("video/") === 0 || /\.(mp4|mov|webm|mkv)$/i.test(file.name)) {
      startVideo(file);
      return;
    }
    showResult();
    setStatus(status, msg("uploading"), true);
    var before = URL.createObjectURL(file);
    upload(file, "content").then(function (info) {
      contentId.value = info.id;
      beforeImage.src = before;
      compare.classList.add("has-before");
      updateCommissionLink();
      paint();
    }).catch(function (error) { setStatus(status, error.message); });
  });

  paintingInput.addEventListener("change", function () {
    var file = paintingInput.files && paintingInput.files[0];
    if (!file) return;
    form.querySelector("#style-own").checked = true;
    showOwnPainting(file);
    showResult();
    setStatus(status, msg("uploading"), true);
    upload(file, "style").then(function (info) {
      ownId.value = info.id;
      paint();
    }).catch(function (error) { setStatus(status, error.message); });
  });

  /* The chosen painting takes the place of the "+" in its style card. */
  function showOwnPainting(file) {
    var tile = form.querySelector(".own-tile");
    if (!tile) return;
    var image = tile.querySelector("img") || document.createElement("img");
    if (image.src) URL.revokeObjectURL(image.src);
    image.src = URL.createObjectURL(file);
    image.alt = "";
    tile.replaceChildren(image);
    tile.classList.add("has-painting");
  }

  form.querySelectorAll("input[name=style]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      if (radio.value === "own" && !ownId.value) { paintingInput.focus(); return; }
      paintSoon(0);
    });
  });

  strength.addEventListener("input", function () {
    strengthValue.textContent = strength.value + " %";
    paintSoon(250);
  });

  compareRange.addEventListener("input", function () {
    compare.style.setProperty("--split", compareRange.value + "%");
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!contentId.value && !(photoInput.files && photoInput.files[0])) {
      showResult();
      setStatus(status, msg("choose-photo"));
      photoInput.focus();
      return;
    }
    paint();
  });

  document.getElementById("another").addEventListener("click", function (event) {
    event.preventDefault();
    var strip = document.getElementById("styles");
    strip.scrollIntoView({ behavior: "smooth", block: "center" });
    var checked = form.querySelector("input[name=style]:checked") || form.querySelector("input[name=style]");
    if (checked) checked.focus({ preventScroll: true });
  });

  /* A page opened with ?photo=... (after a reload, or the form without scripts) shows its
     before/after at once. */
  if (contentId.value && beforeImage.getAttribute("src")) {
    compare.classList.add("has-before");
    compareControl.classList.add("is-ready");
  }
  updateCommissionLink();

  /* ---- videos: a job, followed until the painted clip can be downloaded ---------------- */

  function startVideo(file) {
    var videoStatus = videoResult.querySelector(".status");
    var bar = videoResult.querySelector("progress");
    var player = videoResult.querySelector("video");
    var link = videoResult.querySelector("a[download]");
    result.hidden = true;
    videoResult.hidden = false;
    setStatus(videoStatus, msg("uploading"), true);
    var data = new FormData();
    data.append("content", file);
    var style = chosenStyle();
    if (style === "own" && ownId.value) data.append("style_id", ownId.value);
    else data.append("style_name", style === "own" ? "candy" : style);
    data.append("alpha", (strength.value / 100).toFixed(2));
    data.append("locale", locale);
    fetch("/api/v1/videos", { method: "POST", body: withCaptcha(data) }).then(function (response) {
      if (!response.ok) return readError(response);
      return response.json();
    }).then(function (job) {
      setStatus(videoStatus, msg("video"), true);
      var poll = function () {
        fetch(job.status_url).then(function (response) { return response.json(); }).then(function (state) {
          bar.value = Math.round((state.progress || 0) * 100);
          if (state.status === "done") {
            setStatus(videoStatus, msg("video-done"));
            bar.hidden = true;
            player.src = state.result_url;
            player.hidden = false;
            link.href = state.result_url;
            link.hidden = false;
          } else if (state.status === "failed") {
            setStatus(videoStatus, msg("failed"));
          } else {
            setTimeout(poll, 1000);
          }
        }).catch(function () { setTimeout(poll, 3000); });
      };
      poll();
    }).catch(function (error) { setStatus(videoStatus, error.message); });
  }
})();
