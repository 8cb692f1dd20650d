// The click demo page: draws the server's state and sends clicks. Every answer carries the whole
// state; document.body.dataset.version is set once a state is fully drawn.
"use strict";
const $ = (id) => document.getElementById(id);
const layers = ["image-layer", "gt-layer", "overlay", "clicks-layer"].map($);
let size = null;   // {w, h} of the image in pixels
let scale = 1;     // CSS pixels per image pixel

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("image did not load"));
    img.src = url;
  });
}

function fitScale(w, h) {
  const roomW = Math.max(200, Math.min(window.innerWidth - 340, 900));
  const roomH = Math.max(200, window.innerHeight - 80);
  const s = Math.min(roomW / w, roomH / h);
  return s >= 1 ? Math.floor(s) : s;
}

async function drawLayer(canvas, url) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (url) ctx.drawImage(await loadImage(url), 0, 0);
}

function drawClicks(clicks) {
  const c = $("clicks-layer");
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const r = Math.max(4, Math.min(8, 3 * scale));
  for (const [y, x, positive] of clicks) {
    ctx.beginPath();
    ctx.arc((x + 0.5) * scale, (y + 0.5) * scale, r, 0, 2 * Math.PI);
    ctx.fillStyle = positive ? "#28dc28" : "#e62828";
    ctx.fill();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
}

async function render(state) {
  if (state.image) {
    size = { w: state.width, h: state.height };
    scale = fitScale(size.w, size.h);
    for (const c of layers) {
      const own = c.id === "clicks-layer";
      c.width = own ? Math.round(size.w * scale) : size.w;
      c.height = own ? Math.round(size.h * scale) : size.h;
      c.style.width = Math.round(size.w * scale) + "px";
      c.style.height = Math.round(size.h * scale) + "px";
    }
    $("stage").style.width = Math.round(size.w * scale) + "px";
    $("stage").style.height = Math.round(size.h * scale) + "px";
    await drawLayer($("image-layer"), state.image);
    await drawLayer($("gt-layer"), state.gt);
  }
  if (size) await drawLayer($("overlay"), state.overlay);
  drawClicks(state.clicks || []);
  $("label").textContent = state.label || "-";
  $("click-count").textContent = String((state.clicks || []).length);
  const iou = $("iou");
  iou.textContent = state.iou === null || state.iou === undefined ? "-" : state.iou.toFixed(4);
  iou.dataset.value = state.iou === null || state.iou === undefined ? "" : String(state.iou);
  $("latency").textContent = state.latency_ms === null ? "-" : state.latency_ms.toFixed(1) + " ms";
  $("set-image").textContent = state.set_image_ms === null ? "-" : state.set_image_ms.toFixed(1) + " ms";
  $("mask-pixels").textContent = state.mask_pixels === null ? "-" : String(state.mask_pixels);
  $("click-list").innerHTML = "";
  for (const [y, x, positive] of state.clicks || []) {
    const li = document.createElement("li");
    li.textContent = `${positive ? "+" : "-"} y=${y} x=${x}`;
    li.dataset.y = y; li.dataset.x = x; li.dataset.positive = positive ? "1" : "0";
    $("click-list").appendChild(li);
  }
  $("model").textContent = `${state.checkpoint} (${state.device})`;
  if (!$("checkpoint").value) $("checkpoint").value = state.checkpoint;
  document.body.dataset.version = String(state.version);
}

let pending = Promise.resolve();
function call(path, options) {
  // one request at a time, drawn in order
  pending = pending.then(async () => {
    document.body.dataset.busy = "1";
    try {
      const res = await fetch(path, options);
      let data;
      try { data = await res.json(); } catch (e) { data = { error: `${path}: HTTP ${res.status}` }; }
      showError(data.error);
      if (data.version !== undefined) await render(data);
    } catch (e) {
      showError(`${path}: ${e.message} (is the server running?)`);
    } finally {
      document.body.dataset.busy = "0";
    }
  });
  return pending;
}

const post = (path, body) => call(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
});

function clickAt(event, positive) {
  if (!size) return;
  const rect = $("clicks-layer").getBoundingClientRect();
  const x = Math.floor((event.clientX - rect.left) * size.w / rect.width);
  const y = Math.floor((event.clientY - rect.top) * size.h / rect.height);
  post("/api/click", { x, y, positive });
}

$("clicks-layer").addEventListener("mousedown", (e) => {
  if (e.button === 0) clickAt(e, true);
  else if (e.button === 2) clickAt(e, false);
});
$("clicks-layer").addEventListener("contextmenu", (e) => e.preventDefault());
$("undo").addEventListener("click", () => post("/api/undo"));
$("reset").addEventListener("click", () => post("/api/reset"));
$("opacity").addEventListener("input", (e) => { $("overlay").style.opacity = e.target.value / 100; });
$("choice").addEventListener("change", (e) => { if (e.target.value) post("/api/select", { id: e.target.value }); });
$("load-checkpoint").addEventListener("click", () => post("/api/checkpoint", { path: $("checkpoint").value }));
$("upload").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name);
  call("/api/upload", { method: "POST", body: form });
  e.target.value = "";
});

(async () => {
  try {
    const choices = await (await fetch("/api/choices")).json();
    for (const c of choices) {
      const o = document.createElement("option");
      o.value = c.id; o.textContent = c.label;
      $("choice").appendChild(o);
    }
  } catch (e) {
    showError("could not list the images: " + e.message);
  }
  await call("/api/state");
})();
