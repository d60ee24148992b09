/* Style strips: a row of cards that scrolls sideways shows arrows and faded edges while there is
   more to see on that side, and a card chosen from the keyboard scrolls into view. Where the
   strip is a grid (wide screens) it does not scroll and shows neither. */
(function () {
  "use strict";
  var smooth = window.matchMedia && !window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  document.querySelectorAll("[data-strip]").forEach(function (frame) {
    var strip = frame.querySelector("[data-style-strip]");
    var prev = frame.querySelector("[data-strip-prev]");
    var next = frame.querySelector("[data-strip-next]");
    if (!strip || !prev || !next) return;

    function update() {
      var scrolls = getComputedStyle(strip).overflowX !== "visible" && strip.scrollWidth > strip.clientWidth + 1;
      var before = scrolls && strip.scrollLeft > 1;
      var after = scrolls && strip.scrollLeft + strip.clientWidth < strip.scrollWidth - 1;
      prev.hidden = !before;
      next.hidden = !after;
      frame.classList.toggle("more-before", before);
      frame.classList.toggle("more-after", after);
    }

    function page(direction) {
      // Most of a screen at a time, keeping the last card of this screen in sight.
      var step = Math.max(strip.clientWidth - 96, 96);
      strip.scrollBy({ left: direction * step, behavior: smooth ? "smooth" : "auto" });
    }

    prev.addEventListener("click", function () { page(-1); });
    next.addEventListener("click", function () { page(1); });
    strip.addEventListener("scroll", update, { passive: true });
    window.addEventListener("resize", update);
    strip.querySelectorAll("img").forEach(function (image) { image.addEventListener("load", update); });
    strip.querySelectorAll("input").forEach(function (input) {
      input.addEventListener("focus", function () {
        var card = input.closest("[data-style-card]") || input.parentElement;
        card.scrollIntoView({ block: "nearest", inline: "nearest" });
      });
    });
    update();
  });
})();
