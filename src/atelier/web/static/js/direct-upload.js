/* Files straight to the bucket (with S3 storage; the form says so with data-direct-upload): a
   signed policy good for this one file (POST /api/v1/uploads/presign), the file posted to the
   bucket with its progress reported, then the app's checks of what arrived (confirm), as if it
   had been sent to the app. The promise gives the upload ({id, width, height, ...}).

   A refusal of the file itself (too big, not a picture, the rate limit, the bot check) rejects
   with the message for the person; anything else of the bucket's (its CORS does not name this
   site, it is away) sends the file through the app instead (/api/v1/uploads). Pages call it
   only when scripts run: without them their forms post the file to the app as always. */
(function () {
  "use strict";

  function refusal(response, messages) {
    return response.json().catch(function () { return null; }).then(function (body) {
      var error = new Error(response.status === 413 ? messages.tooBig
        : body && body.error && body.error.code === "bad_image" ? messages.unreadable
        : response.status >= 500 ? messages.failed
        : (body && body.error && body.error.message) || messages.failed);
      throw error;
    });
  }

  function throughApp(file, kind, options) {
    var data = new FormData();
    data.append("file", file);
    data.append("kind", kind);
    if (options.captcha) data.append("captcha_token", options.captcha);
    return fetch("/api/v1/uploads", { method: "POST", body: data }).then(function (response) {
      if (!response.ok) return refusal(response, options.messages);
      return response.json();
    });
  }

  function toBucket(file, policy, onProgress) {
    return new Promise(function (resolve, reject) {
      var data = new FormData();
      Object.keys(policy.fields).forEach(function (name) { data.append(name, policy.fields[name]); });
      data.append("file", file);  // last: S3 ignores the fields after the file
      var request = new XMLHttpRequest();
      request.open("POST", policy.url);
      request.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable && onProgress) onProgress(Math.floor(100 * event.loaded / event.total));
      });
      request.addEventListener("load", function () {
        if (request.status >= 200 && request.status < 300) resolve(); else reject(new Error("bucket " + request.status));
      });
      request.addEventListener("error", function () { reject(new Error("bucket unreachable")); });
      request.send(data);
    });
  }

  function confirm(policy, messages) {
    return fetch(policy.confirm_url, { method: "POST" }).then(function (response) {
      if (!response.ok) return refusal(response, messages);
      return response.json();
    });
  }

  /* options: messages {tooBig, unreadable, failed}, onProgress(percent), captcha (a token). */
  window.atelierDirectUpload = function (file, kind, options) {
    var headers = { "Content-Type": "application/json" };
    if (options.captcha) headers["X-Captcha-Token"] = options.captcha;
    return fetch("/api/v1/uploads/presign", {
      method: "POST", headers: headers, body: JSON.stringify({ content_type: file.type, kind: kind })
    }).then(function (response) {
      if (response.status === 429 || response.status === 403) return refusal(response, options.messages);
      if (!response.ok) return throughApp(file, kind, options);  // e.g. a type only the app's checks name
      return response.json().then(function (policy) {
        if (file.size > policy.max_bytes) {
          throw new Error(options.messages.tooBig);
        }
        return toBucket(file, policy, options.onProgress).then(function () {
          return confirm(policy, options.messages);
        }, function () {
          // The bucket may have kept the file though its answer could not be read: ask first.
          return confirm(policy, options.messages).catch(function () { return throughApp(file, kind, options); });
        });
      });
    });
  };
})();
