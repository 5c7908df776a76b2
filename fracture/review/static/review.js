// The review app's only script: window/level, Grad-CAM opacity, keyboard navigation. No external assets.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const opacity = $("opacity"), cam = $("cam");
  if (opacity && cam) opacity.addEventListener("input", () => { cam.style.opacity = opacity.value; });

  const full = $("full");
  if (full) {
    const level = $("level"), width = $("width"), out = $("window-values");
    let defaults = null, timer = null;
    const show = () => {
      const l = parseFloat(level.value), w = parseFloat(width.value);
      const lo = l - w / 2, hi = l + w / 2;
      out.textContent = "level " + l.toFixed(1) + ", width " + w.toFixed(1);
      clearTimeout(timer);
      timer = setTimeout(() => { full.src = full.dataset.base + "?lo=" + lo + "&hi=" + hi; }, 120);
    };
    const reset = () => {
      level.value = (defaults.lo + defaults.hi) / 2;
      width.value = defaults.hi - defaults.lo;
      show();
    };
    fetch(full.dataset.window, { credentials: "same-origin" }).then((r) => r.json()).then((d) => {
      defaults = d;
      const span = Math.max(d.max - d.min, 1);
      level.min = d.min; level.max = d.max; level.step = span / 1000;
      width.min = span / 1000; width.max = span * 2; width.step = span / 1000;
      reset();
    });
    level.addEventListener("input", show);
    width.addEventListener("input", show);
    $("reset-window").addEventListener("click", reset);
  }

  const saveNext = $("save-next");
  if (saveNext) saveNext.addEventListener("click", () => { $("next-url").value = saveNext.dataset.next; });

  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" && t.type !== "radio" && t.type !== "checkbox" || t.tagName === "SELECT")) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const pick = (v) => { const r = document.querySelector('input[name="verdict"][value="' + v + '"]'); if (r) r.checked = true; };
    const go = (id) => { const a = $(id); if (a) window.location = a.href; };
    switch (e.key) {
      case "j": go("next"); break;
      case "k": go("prev"); break;
      case "a": pick("agree"); break;
      case "d": pick("disagree"); break;
      case "u": pick("unsure"); break;
      case "s": if ($("save")) $("save").click(); break;
      case "n": if (saveNext) saveNext.click(); break;
      default: return;
    }
  });
})();
