// emovit web page: photo upload, live camera with smoothing, expression capture, video timeline.
// No build step.
"use strict";

// The labels results carry: the seven emotions until /v1/models says otherwise (loadLabels).
let EMOTIONS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"];
const COLOURS = { angry: "#e63946", disgust: "#6a994e", fear: "#9b5de5", happy: "#ffc832",
  neutral: "#c8c8c8", sad: "#4361ee", surprise: "#ff7f50" };
const $ = (id) => document.getElementById(id);

// A label's colour: the emotions' own, or one spread around the hue circle for other labels.
function colourOf(label) {
  if (COLOURS[label]) return COLOURS[label];
  const index = Math.max(0, EMOTIONS.indexOf(label));
  return `hsl(${(index * 137) % 360}, 65%, 45%)`;
}

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// Each part of the page says its own news beside itself: the page's (the model loading) in the
// header, the photo's, the camera's and the video's in their sections.
function say(id, message, isError = false) {
  const el = $(id);
  el.textContent = message;
  el.classList.toggle("error", isError);
}
const status = (message, isError = false) => say("status", message, isError);
const photoStatus = (message, isError = false) => say("photo-status", message, isError);
const cameraStatus = (message, isError = false) => say("camera-status", message, isError);

// An API error: its message, HTTP status and Retry-After (seconds), for the callers to decide.
class ApiError extends Error {
  constructor(message, status, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

const UNREACHABLE = "the server cannot be reached (is it still running?)";
// What a request or a wait the user cancelled rejects with.
const cancelled = () => Object.assign(new ApiError("cancelled", 0, 0), { cancelled: true });
// The server's message about a file, without the file's name it starts with (the page names it).
const unnamed = (message, name) => (message.startsWith(`${name}: `) ? message.slice(name.length + 2) : message);
// The status while a busy server's Retry-After runs out.
const waiting = (name, seconds, err) => `Waiting ${seconds} s to send ${name} again (${err.message}) …`;

// An API answer (its HTTP status, Retry-After header and text): the JSON body, or an ApiError
// whose message a person can read: the server's own, or what a proxy's page means.
function apiAnswer(status, retryAfterHeader, text) {
  let body = null;
  try {
    body = JSON.parse(text);
  } catch (err) {
    body = null;
  }
  const retryAfter = Number(retryAfterHeader) || 0;
  if (status < 200 || status > 299) {
    const known = { 413: "the upload is too large for this server", 502: "the server is not answering (bad gateway)",
      503: "the server is busy", 504: "the server took too long" };
    const message = body && body.error ? body.error.message : known[status] || `HTTP error ${status}`;
    throw new ApiError(message, status, retryAfter);
  }
  if (!body) throw new ApiError("the server's answer was not readable", status, 0);
  return body;
}

// A request to the API, its JSON answer or an ApiError (a lost connection too).
async function callApi(url, options) {
  let response;
  try {
    response = await fetch(url, { ...options, headers: authHeaders() });
  } catch (err) {
    throw new ApiError(UNREACHABLE, 0, 0);
  }
  const text = await response.text().catch(() => "");
  return apiAnswer(response.status, response.headers.get("Retry-After"), text);
}

// An upload to the API that reports its progress (onProgress(sent, total) while the body goes
// out, onProgress(null) once it has all gone) and can be cancelled: { answer, cancel }. The
// answer is callApi's; a cancelled upload rejects with an ApiError whose `cancelled` is true.
function uploadApi(url, form, onProgress) {
  const xhr = new XMLHttpRequest();
  const answer = new Promise((resolve, reject) => {
    xhr.open("POST", url);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : 0);
    xhr.upload.onload = () => onProgress(null);
    xhr.onload = () => {
      try {
        resolve(apiAnswer(xhr.status, xhr.getResponseHeader("Retry-After"), xhr.responseText));
      } catch (err) {
        reject(err);
      }
    };
    xhr.onerror = () => reject(new ApiError(UNREACHABLE, 0, 0));
    xhr.onabort = () => reject(cancelled());
    xhr.send(form);
  });
  return { answer, cancel: () => xhr.abort() };
}

// `call()`, again while the server answers 503 with a Retry-After (busy with other work: the
// camera's maps, another clip; or loading), at most `tries` times in all: onWait(seconds, err)
// says so first, and `sleep(ms)` waits (a cancellable one may reject, which ends the retries).
async function retryWhenBusy(call, { onWait, isCurrent = () => true, sleep = delay, tries = 5 }) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await call();
    } catch (err) {
      if (err.status !== 503 || !err.retryAfter || attempt >= tries || !isCurrent()) throw err;
      onWait(err.retryAfter, err);
      await sleep(err.retryAfter * 1000);
      if (!isCurrent()) throw err; // another photo or clip was chosen meanwhile: not sent again
    }
  }
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function predict(blob, name) {
  const form = new FormData();
  form.append("files", blob, name);
  const why = $("why").checked ? "&explain=true" : "";
  const body = await callApi(`/v1/predict?top_k=3${why}`, { method: "POST", body: form });
  if (!Array.isArray(body.results) || !body.results.length) throw new ApiError("the server's answer was not readable", 200, 0);
  return body.results[0];
}

// The model's labels (result_labels of /v1/models), for capture targets and the timeline.
async function loadLabels() {
  try {
    const response = await fetch("/v1/models", { headers: authHeaders() });
    if (!response.ok) return;
    const body = await response.json();
    if (Array.isArray(body.result_labels) && body.result_labels.length) EMOTIONS = body.result_labels;
  } catch (err) {
    // keep the seven emotions: the page still works, the server says why on the next request
  }
}

function drawFaces(ctx, faces, scaleX = 1, scaleY = 1) {
  const line = Math.max(2, Math.round(ctx.canvas.width / 250));
  ctx.lineWidth = line;
  ctx.font = `${Math.max(12, Math.round(ctx.canvas.width / 40))}px system-ui, sans-serif`;
  faces.forEach((face, i) => {
    if (!face.box) return;
    const [x1, y1, x2, y2] = face.box;
    const colour = colourOf(face.label);
    ctx.strokeStyle = colour;
    ctx.strokeRect(x1 * scaleX, y1 * scaleY, (x2 - x1) * scaleX, (y2 - y1) * scaleY);
    const text = `${i}: ${face.label} ${face.score.toFixed(2)}`;
    const width = ctx.measureText(text).width + 2 * line;
    const height = parseInt(ctx.font, 10) + 2 * line;
    const top = y1 * scaleY - height >= 0 ? y1 * scaleY - height : y2 * scaleY;
    ctx.fillStyle = colour;
    ctx.fillRect(x1 * scaleX, top, width, height);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x1 * scaleX + line, top + height - 2 * line);
  });
}

// ---------------------------------------------------------------- "why?": explanation maps
// The heat ramp of the maps, 0 (dark blue) to 1 (dark red): the library's own colours.
const HEAT = [[0, 0, 130], [0, 70, 255], [0, 220, 255], [150, 255, 100], [255, 220, 0], [255, 70, 0], [150, 0, 0]];

function heatColour(value) {
  const scaled = Math.min(1, Math.max(0, value)) * (HEAT.length - 1);
  const low = Math.min(Math.floor(scaled), HEAT.length - 2);
  const frac = scaled - low;
  return HEAT[low].map((c, i) => Math.round(c * (1 - frac) + HEAT[low + 1][i] * frac));
}

// A face's map (an 8-bit grey PNG, base64, at the crop's size) as a translucent heat image.
// Per-pixel maps (smoothgrad) are blurred a little and rescaled, as the Python plots draw
// them (Explanation.display_map), so that regions show rather than single pixels.
async function heatImage(png64, smooth) {
  const bytes = Uint8Array.from(atob(png64), (c) => c.charCodeAt(0));
  const grey = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
  const canvas = document.createElement("canvas");
  canvas.width = grey.width;
  canvas.height = grey.height;
  const ctx = canvas.getContext("2d");
  if (smooth) ctx.filter = `blur(${Math.max(1, 0.025 * Math.min(grey.width, grey.height))}px)`;
  ctx.drawImage(grey, 0, 0);
  ctx.filter = "none";
  const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const px = image.data;
  let top = 255;
  if (smooth) {
    top = 1;
    for (let i = 0; i < px.length; i += 4) top = Math.max(top, px[i]);
  }
  for (let i = 0; i < px.length; i += 4) {
    const [r, g, b] = heatColour(px[i] / top);
    px[i] = r;
    px[i + 1] = g;
    px[i + 2] = b;
    px[i + 3] = 115; // 45 % over the photo
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function heatImages(faces) {
  return Promise.all(
    faces.map((f) =>
      f.explanation_png ? heatImage(f.explanation_png, f.explanation && f.explanation.method === "smoothgrad") : null,
    ),
  );
}

// Lay each face's map (from heatImages) over its crop's place in the image (crop_to_image:
// the crop's affine placement, rotated when the eyes were levelled).
function drawExplanations(ctx, faces, heats) {
  faces.forEach((face, i) => {
    if (!heats[i] || !face.explanation) return;
    const [[a, b, c], [d, e, f]] = face.explanation.crop_to_image;
    ctx.save();
    ctx.transform(a, d, b, e, c, f);
    ctx.drawImage(heats[i], -0.5, -0.5); // crop pixel centres sit on whole coordinates
    ctx.restore();
  });
  ctx.canvas.dataset.explained = String(heats.filter(Boolean).length);
}

function renderBars(list, faces) {
  list.replaceChildren();
  faces.forEach((face, i) => {
    const item = document.createElement("li");
    const title = document.createElement("div");
    title.className = "face-label";
    title.dataset.label = face.label;
    title.textContent = `face ${i}: ${face.label} (${(face.score * 100).toFixed(0)} %)`;
    item.append(title);
    for (const [label, p] of Object.entries(face.probs)) {
      const bar = document.createElement("div");
      bar.className = "bar";
      const name = document.createElement("span");
      name.textContent = label;
      const track = document.createElement("div");
      track.className = "track";
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = `${(p * 100).toFixed(1)}%`;
      fill.style.background = colourOf(label);
      track.append(fill);
      const value = document.createElement("span");
      value.textContent = p.toFixed(2);
      bar.append(name, track, value);
      item.append(bar);
    }
    list.append(item);
  });
}

// ---------------------------------------------------------------- photo
let lastPhoto = null;
let photoRequest = 0; // the newest photo request: an older answer that arrives later is dropped

function clearPhoto() {
  $("photo-canvas").hidden = true;
  $("faces-list").replaceChildren();
}

async function handleFile(file) {
  // a file the browser cannot type (no extension) goes to the server, which reads its bytes
  if (!file || (file.type && !file.type.startsWith("image/"))) {
    photoRequest += 1; // an earlier photo's late answer must not replace this message
    clearPhoto();
    photoStatus("Please choose an image file.", true);
    return;
  }
  lastPhoto = file;
  const request = ++photoRequest;
  photoStatus(`Analysing ${file.name} …`);
  try {
    // boxes are in the server's pixels, which follow the EXIF orientation, as browsers draw it;
    // a format the server reads and the browser cannot draw (TIFF, PPM) still gets its results
    const answer = retryWhenBusy(() => predict(file, file.name), {
      isCurrent: () => request === photoRequest,
      onWait: (seconds, err) => photoStatus(waiting(file.name, seconds, err)),
    });
    const [result, bitmap] = await Promise.all([answer, createImageBitmap(file).catch(() => null)]);
    const heats = await heatImages(result.faces);
    if (request !== photoRequest) return;
    const canvas = $("photo-canvas");
    canvas.hidden = !bitmap;
    if (bitmap) {
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(bitmap, 0, 0);
      drawExplanations(ctx, result.faces, heats);
      drawFaces(ctx, result.faces);
    }
    renderBars($("faces-list"), result.faces);
    const found = result.ok === false ? `Could not analyse the photo: ${result.error}`
      : result.faces.length ? `${result.faces.length} face(s) found.` : "No face found in this photo.";
    photoStatus(found + (bitmap ? "" : " (this browser cannot show this image format)"), result.ok === false);
  } catch (err) {
    if (request !== photoRequest) return;
    clearPhoto(); // the previous photo's results are not this one's
    photoStatus(`Could not analyse ${file.name}: ${unnamed(err.message, file.name)}`, true);
  }
}

function setUpPhoto() {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (e) => {
    handleFile(e.target.files[0]);
    e.target.value = ""; // the same file chosen again (a retry) is sent again
  });
  $("choose-file").addEventListener("click", () => $("file-input").click());
  zone.addEventListener("keydown", (e) => { // the drop zone opens the chooser from the keyboard too
    if (e.target === zone && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      $("file-input").click();
    }
  });
  $("why").addEventListener("change", () => { if (lastPhoto) handleFile(lastPhoto); }); // redraw with(out) maps
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    handleFile(e.dataTransfer.files[0]);
  });
}

// ---------------------------------------------------------------- camera
const camera = {
  stream: null, timer: null, busy: false, starting: false, smoothed: [], capture: null, pausedUntil: 0, urls: [],
  failing: false, // the status shows a frame's error (cleared by the next frame that goes through)
};
const SMOOTHING = 0.5; // weight of the newest frame in the running average

function iou(a, b) {
  const ix = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const iy = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = ix * iy;
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return union > 0 ? inter / union : 0;
}

// Average each face's probabilities over recent frames, matching faces by box overlap.
function smooth(faces) {
  const next = faces.map((face) => {
    const previous = camera.smoothed.find((old) => old.box && face.box && iou(old.box, face.box) > 0.3);
    const probs = {};
    for (const label of Object.keys(face.probs)) {
      const old = previous ? previous.probs[label] ?? face.probs[label] : face.probs[label];
      probs[label] = SMOOTHING * face.probs[label] + (1 - SMOOTHING) * old;
    }
    const label = Object.keys(probs).reduce((a, b) => (probs[a] >= probs[b] ? a : b));
    return { ...face, probs, label, score: probs[label] };
  });
  camera.smoothed = next;
  return next;
}

function cameraError(err) {
  if (!window.isSecureContext) return "The camera needs a secure page: open it via http://localhost or HTTPS.";
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return "This browser cannot use a camera here.";
  if (err && (err.name === "NotAllowedError" || err.name === "SecurityError")) {
    return "Camera access was denied. Allow it in the browser's site settings and try again.";
  }
  if (err && (err.name === "NotFoundError" || err.name === "OverconstrainedError")) return "No camera was found.";
  if (err && err.name === "NotReadableError") return "The camera is in use by another application.";
  return `The camera could not start: ${err ? err.message : "unknown error"}`;
}

async function startCamera() {
  if (camera.stream || camera.starting) return; // one camera at a time (a second click, capture mode)
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    cameraStatus(cameraError(null), true);
    return;
  }
  camera.starting = true;
  $("start-camera").disabled = true;
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) {
    cameraStatus(cameraError(err), true);
    $("start-camera").disabled = false;
    return;
  } finally {
    camera.starting = false;
  }
  camera.stream = stream;
  camera.pausedUntil = 0;
  const video = $("video");
  video.srcObject = stream;
  await video.play().catch(() => {});
  $("stop-camera").disabled = false;
  cameraStatus("Camera on.");
  const fps = Math.min(10, Math.max(1, Number($("fps").value) || 3));
  camera.timer = setInterval(sendFrame, 1000 / fps);
}

function stopCamera(message = "Camera off.", isError = false) {
  clearInterval(camera.timer);
  camera.timer = null;
  if (camera.stream) camera.stream.getTracks().forEach((t) => t.stop());
  camera.stream = null;
  camera.smoothed = [];
  $("video").srcObject = null;
  const overlay = $("overlay");
  overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
  $("live-faces").replaceChildren();
  $("start-camera").disabled = false;
  $("stop-camera").disabled = true;
  if (camera.capture && camera.capture.index < camera.capture.targets.length) {
    $("capture-status").textContent = "Capture stopped with the camera.";
  }
  camera.capture = null;
  cameraStatus(message, isError);
}

// A new frames/s applies at once to a running camera.
function restartTimer() {
  if (!camera.timer) return;
  clearInterval(camera.timer);
  const fps = Math.min(10, Math.max(1, Number($("fps").value) || 3));
  camera.timer = setInterval(sendFrame, 1000 / fps);
}

function grabFrame() {
  const video = $("video");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  return canvas;
}

async function sendFrame() {
  const video = $("video");
  if (camera.busy || !camera.stream || !video.videoWidth || Date.now() < camera.pausedUntil) return;
  camera.busy = true;
  const stream = camera.stream;
  try {
    const frame = grabFrame();
    const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.85));
    if (!blob) return;
    const result = await predict(blob, "frame.jpg");
    const heats = await heatImages(result.faces);
    if (camera.stream !== stream) return; // stopped (or restarted) meanwhile: an answer for nobody
    const faces = smooth(result.faces);
    const overlay = $("overlay");
    overlay.width = frame.width;
    overlay.height = frame.height;
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    drawExplanations(ctx, result.faces, heats);
    drawFaces(ctx, faces);
    renderBars($("live-faces"), faces);
    checkCapture(frame, faces);
    if (camera.failing) cameraStatus("Camera on."); // the last frame's error is over
    camera.failing = false;
  } catch (err) {
    if (camera.stream !== stream) return;
    camera.failing = true;
    if (err.status === 401) {
      stopCamera("The server needs a valid API token: enter it above, then start the camera again.", true);
    } else if (err.status === 503 || err.status === 504 || err.status === 429) {
      // busy: wait as long as the server asks (at least 2 s) instead of asking again every frame
      const wait = Math.max(2, err.retryAfter || 0);
      camera.pausedUntil = Date.now() + wait * 1000;
      cameraStatus(`The server is busy (${err.message}); trying again in ${wait} s.`, true);
    } else {
      cameraStatus(`Live analysis failed: ${err.message}`, true);
    }
  } finally {
    camera.busy = false;
  }
}

// ---------------------------------------------------------------- capture mode
function startCapture() {
  const targets = $("capture-targets").value.split(",").map((t) => t.trim().toLowerCase()).filter(Boolean);
  const unknown = targets.filter((t) => !EMOTIONS.includes(t));
  if (!targets.length || unknown.length) {
    cameraStatus(`Targets must be among: ${EMOTIONS.join(", ")}`, true);
    return;
  }
  // the threshold within the field's own bounds: above 0.99 nothing would ever be captured
  const threshold = Math.min(0.99, Math.max(0.1, Number($("capture-threshold").value) || 0.6));
  $("capture-threshold").value = String(threshold);
  camera.capture = { targets, index: 0, threshold };
  camera.urls.forEach((url) => URL.revokeObjectURL(url)); // the previous captures' images
  camera.urls = [];
  $("captures").replaceChildren();
  $("capture-status").textContent = `Waiting for: ${targets[0]}`;
  if (!camera.stream) startCamera();
}

function checkCapture(frame, faces) {
  const capture = camera.capture;
  if (!capture || capture.index >= capture.targets.length || !faces.length) return;
  const target = capture.targets[capture.index];
  const face = faces[0]; // the largest face
  if ((face.probs[target] ?? 0) < capture.threshold) return;
  const figure = document.createElement("figure");
  const img = document.createElement("img");
  img.dataset.label = target;
  img.alt = `captured ${target} face`;
  const caption = document.createElement("figcaption");
  const link = document.createElement("a");
  link.textContent = `${target} (${(face.probs[target] * 100).toFixed(0)} %) — download`;
  link.download = `emovit-${target}.jpg`;
  frame.toBlob((blob) => {
    if (!blob) return;
    const url = URL.createObjectURL(blob);
    camera.urls.push(url);
    img.src = url;
    link.href = url;
  }, "image/jpeg", 0.92);
  caption.append(link);
  figure.append(img, caption);
  $("captures").append(figure);
  capture.index += 1;
  $("capture-status").textContent = capture.index < capture.targets.length
    ? `Captured ${target}. Waiting for: ${capture.targets[capture.index]}`
    : "All targets captured.";
}

// ---------------------------------------------------------------- video

function videoStatus(message, isError = false) {
  const el = $("video-status");
  el.textContent = message;
  el.classList.toggle("error", isError);
}

let videoRequest = 0; // the newest clip: one clip at a time, and no older answer shown over it
let cancelVideo = null; // stops the clip under way (its upload, or the server's analysis of it)

const megabytes = (bytes) => (bytes / 1e6).toFixed(1);

// A wait of `ms` that can be cancelled: { done, cancel }; done rejects as a cancelled upload does.
function cancellableDelay(ms) {
  let cancel = null;
  const done = new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    cancel = () => {
      clearTimeout(timer);
      reject(cancelled());
    };
  });
  return { done, cancel };
}

async function analyseVideo(file) {
  if (!file) return;
  const fps = Math.min(30, Math.max(1, Number($("video-fps").value) || 10));
  const smooth = Math.min(5, Math.max(0, Number($("video-smooth").value) || 0));
  const start = Math.max(0, Number($("video-start").value) || 0);
  const end = Number($("video-end").value) || 0; // empty or 0: to the end of the clip
  if (end && end <= start) {
    $("video-timeline").hidden = true; // the last clip's results are not under this error
    $("video-summary").hidden = true;
    videoStatus(`The end (${end} s) must be after the start (${start} s).`, true);
    return;
  }
  const query = `fps=${fps}&smooth=${smooth}` + (start ? `&start=${start}` : "") + (end ? `&end=${end}` : "");
  const form = new FormData();
  form.append("files", file, file.name);
  if (cancelVideo) cancelVideo(); // one clip at a time: an earlier one still going is stopped
  const request = ++videoRequest;
  const current = () => request === videoRequest;
  $("video-timeline").hidden = true; // the last clip's results are not this one's
  $("video-summary").hidden = true;
  $("choose-clip").disabled = true;
  const progress = $("video-progress");
  progress.hidden = false;
  progress.value = 0;
  let analysing = null; // when the upload ended and the server's analysis began
  const tick = () => {
    if (analysing === null || !current()) return;
    progress.removeAttribute("value"); // indeterminate: the server does not say how far it is
    videoStatus(`Analysing ${file.name} … ${Math.round((Date.now() - analysing) / 1000)} s`);
  };
  const onProgress = (sent, total) => {
    if (!current()) return;
    if (sent === null) {
      analysing = Date.now();
      tick();
    } else if (total) {
      progress.value = sent / total;
      videoStatus(`Uploading ${file.name} … ${Math.round((100 * sent) / total)} % `
        + `(${megabytes(sent)} of ${megabytes(total)} MB)`);
    }
  };
  const clock = setInterval(tick, 1000);
  $("cancel-clip").disabled = false;
  try {
    const send = () => {
      analysing = null;
      progress.value = 0;
      videoStatus(`Uploading ${file.name} …`);
      const upload = uploadApi(`/v1/video?${query}`, form, onProgress);
      cancelVideo = upload.cancel;
      return upload.answer;
    };
    const body = await retryWhenBusy(send, { // busy with another clip, perhaps one just cancelled
      isCurrent: current,
      onWait: (seconds, err) => {
        analysing = null;
        videoStatus(waiting(file.name, seconds, err));
      },
      sleep: (ms) => {
        const wait = cancellableDelay(ms);
        cancelVideo = wait.cancel;
        return wait.done;
      },
    });
    if (request !== videoRequest) return;
    drawTimeline($("video-timeline"), body.frames, body.summary);
    renderSummary(body.summary);
    const s = body.summary;
    videoStatus(`${file.name}: ${s.frames_analysed} frames analysed over ${s.duration_s.toFixed(1)} s: `
      + `${s.tracks.length} face track(s), ${s.faces_per_frame.toFixed(2)} faces per frame.`
      + (s.warnings.length ? ` Warning: ${s.warnings.join(" ")}` : ""));
  } catch (err) {
    if (request !== videoRequest) return;
    if (err.cancelled) videoStatus(`Cancelled: ${file.name} was not analysed.`);
    else videoStatus(`Could not analyse the video ${file.name}: ${unnamed(err.message, file.name)}`, true);
  } finally {
    clearInterval(clock);
    if (request === videoRequest) {
      $("choose-clip").disabled = false;
      $("cancel-clip").disabled = true;
      progress.hidden = true;
      cancelVideo = null;
    }
  }
}

// One panel per track: each emotion's smoothed probability over time, drawn on the canvas.
function drawTimeline(canvas, frames, summary) {
  const tracks = summary.tracks.map((t) => t.track_id);
  const series = new Map(tracks.map((id) => [id, []]));
  for (const frame of frames) {
    for (const face of frame.faces) {
      if (series.has(face.track_id)) series.get(face.track_id).push([frame.time_s, face.probs]);
    }
  }
  const panel = 110;
  const top = 28;
  const left = 70;
  const width = canvas.width = Math.max(600, canvas.parentElement.clientWidth || 800);
  canvas.height = top + Math.max(1, tracks.length) * (panel + 12) + 24;
  canvas.hidden = false;
  canvas.dataset.tracks = String(tracks.length);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.font = "12px system-ui, sans-serif";
  const step = (width - left) / EMOTIONS.length;
  EMOTIONS.forEach((label, i) => {  // legend
    ctx.fillStyle = colourOf(label);
    ctx.fillRect(left + i * step, 8, 14, 10);
    ctx.fillStyle = "#333";
    ctx.fillText(label, left + i * step + 18, 17);
  });
  const end = Math.max(summary.duration_s, ...frames.map((f) => f.time_s || 0), 0.001);
  const x = (t) => left + (t / end) * (width - left - 12);
  if (!tracks.length) {
    ctx.fillStyle = "#666";
    ctx.fillText("no faces found in this video", left, top + panel / 2);
    return;
  }
  tracks.forEach((id, row) => {
    const y0 = top + row * (panel + 12);
    const y = (p) => y0 + panel - p * panel;
    ctx.strokeStyle = "#d0d0d8";
    ctx.lineWidth = 1;
    ctx.strokeRect(left, y0, width - left - 12, panel);
    ctx.fillStyle = "#333";
    ctx.fillText(`track ${id}`, 8, y0 + panel / 2);
    const points = series.get(id);
    for (const label of EMOTIONS) {
      ctx.strokeStyle = colourOf(label);
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      let previous = null;
      for (const [t, probs] of points) {
        const gap = previous !== null && t - previous > 0.5;  // the face was away: break the line
        if (previous === null || gap) ctx.moveTo(x(t), y(probs[label] ?? 0));
        else ctx.lineTo(x(t), y(probs[label] ?? 0));
        previous = t;
      }
      ctx.stroke();
    }
  });
  ctx.fillStyle = "#333";
  const bottom = top + tracks.length * (panel + 12) + 14;
  for (let i = 0; i <= 4; i += 1) {
    const t = (end * i) / 4;
    ctx.textAlign = i === 0 ? "left" : i === 4 ? "right" : "center";
    ctx.fillText(`${t.toFixed(1)} s`, x(t), bottom);
  }
  ctx.textAlign = "left";
}

function renderSummary(summary) {
  const table = $("video-summary");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  for (const track of summary.tracks) {
    const row = document.createElement("tr");
    row.dataset.track = String(track.track_id);
    const shares = Object.entries(track.share).filter(([, v]) => v > 0)
      .sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${(v * 100).toFixed(0)} %`).join(", ");
    for (const text of [`#${track.track_id}`, `${track.first_s.toFixed(2)}–${track.last_s.toFixed(2)}`,
      String(track.frames), track.dominant, shares]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    body.append(row);
  }
  table.hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  const saved = sessionStorage.getItem("emovit-token");
  if (saved) $("token").value = saved;
  $("token").addEventListener("change", (e) => {
    sessionStorage.setItem("emovit-token", e.target.value);
    loadLabels();
  });
  setUpPhoto();
  $("start-camera").addEventListener("click", startCamera);
  $("stop-camera").addEventListener("click", () => stopCamera());
  $("start-capture").addEventListener("click", startCapture);
  $("video-input").addEventListener("change", (e) => {
    analyseVideo(e.target.files[0]);
    e.target.value = ""; // the same clip chosen again (a retry) is sent again
  });
  $("fps").addEventListener("change", restartTimer);
  $("choose-clip").addEventListener("click", () => $("video-input").click());
  $("cancel-clip").addEventListener("click", () => cancelVideo && cancelVideo());
  loadLabels();
  waitUntilReady();
});

// The page says whether the model has loaded (/readyz), instead of "Ready." while it loads.
async function waitUntilReady() {
  for (let tries = 0; ; tries += 1) {
    try {
      const response = await fetch("/readyz");
      if (response.ok) {
        status("Ready.");
        return;
      }
      const why = (await response.text().catch(() => "")).trim(); // plain text: loading, failed, ...
      if (why !== "loading") {
        status(`The server cannot answer: ${why || `HTTP ${response.status}`} (see the server's log).`, true);
        return;
      }
      status("The model is loading …");
    } catch (err) {
      status("The server cannot be reached.", true);
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 500 * (tries + 1))));
  }
}
