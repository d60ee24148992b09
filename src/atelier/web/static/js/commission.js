/* The commission form with S3 storage: a photo chosen here goes straight to the bucket
   (direct-upload.js) before the form is sent, and the form then names the upload instead of
   carrying the file. Without scripts, or when the upload fails, the form posts the file. */
(function () {
  "use strict";
  var form = document.getElementById("order");
  if (!form || !form.dataset.directUpload || !window.atelierDirectUpload) return;
  var input = form.querySelector("input[type=file][name=photo]");
  var button = form.querySelector("button[type=submit]");
  var status = form.querySelector("[data-upload-status]");
  var msg = function (key, values) { return window.atelierMessage(form, key, values); };
  var sending = false;

  form.addEventListener("submit", function (event) {
    var file = input && input.files && input.files[0];
    if (!file || !file.type || sending) return;  // no new photo: the form as it is
    event.preventDefault();
    if (!form.reportValidity()) return;
    sending = true;
    button.disabled = true;
    status.hidden = false;
    status.textContent = msg("uploading");
    var captcha = form.querySelector("[name='cf-turnstile-response'], [name='g-recaptcha-response'], [name='h-captcha-response']");
    window.atelierDirectUpload(file, "content", {
      messages: { tooBig: msg("too-big"), unreadable: msg("unreadable"), failed: msg("failed") },
      captcha: captcha ? captcha.value : "",
      onProgress: function (percent) { status.textContent = msg("uploading-percent", { percent: percent }); }
    }).then(function (upload) {
      var field = form.querySelector("input[name=content_id]");
      if (!field) {
        field = document.createElement("input");
        field.type = "hidden";
        field.name = "content_id";
        form.appendChild(field);
      }
      field.value = upload.id;
      input.value = "";  // the form names the upload; the file is not sent again
      input.required = false;
      form.submit();
    }).catch(function (error) {
      sending = false;
      button.disabled = false;
      status.textContent = error.message;
      status.classList.add("is-error");
    });
  });
})();
