// TrackStream live demo: the stream on a canvas, points that make tracks, a brush and DragStream drags.
// Protocol: stream/demo/protocol.py (control messages are JSON text; every frame is one binary message,
// a 16-byte header then a JPEG / WebP file). `window.demo` exposes the page's state (what was received,
// what is shown) for debugging and for the browser test.
"use strict";

const $ = (id) => document.getElementById(id);
const view = $("view");
const ctx = view.getContext("2d");
const demo = window.demo = {
  W: 64, H: 64, fps: 16, chunkFrames: 12, maxPoints: 64, token: null, format: "jpeg",
  frames: [],             // the last received frames {n, chunk, blob, replaces}, newest last (for inspection)
  seen: new Set(),        // frame numbers received since the stream (re)started
  queue: [],              // frames waiting to be shown {n, bitmap (null while decoding), failed}
  shown: null,            // the frame on the canvas {n, bitmap}
  points: [],             // {id, x, y, pinned}
  stats: {received: 0, drawn: 0, chunks: 0, chunk: -1, latency: null, dropped: 0, errors: 0, bytes: 0},
  saved: null,            // the last "save video": {bytes, frames, dropped}
  started: false, paused: false, lastError: "", dragged: null, closed: null,
  promptAt: null,         // the chunk the last prompt change took effect at
  camera: null,           // the last camera move from the server: {times, points} (the points are drawn along it)
  grid: null,             // hello's grid: the spacings the Grid button offers (protocol.py), set by setGrid
  lastGrid: null,         // the last grid laid: {spacing, offset, jitter, points, laid}
  random: Math.random,    // the grid's offset and jitter draw from it (the browser test pins it)
  groups: [],             // grids a person laid: {kind: "static" | "moving", box: [x0, y0, x1, y1], ids}
  trajectories: [],       // drawn while paused, played on resume: {ids, path: [[x, y], ...]} (frame pixels)
  paths: null,            // trajectories playing: {t0, seconds, moves: [{ids, base: [[x, y]], path}]}
  ended: false,           // Enter ended the stream (Enter again starts a new one)
  sent: [],               // the last messages sent {type, ...} (for inspection and the browser test)
};
const COLOURS = {static: "#ff6b6b", moving: "#5fd38d", path: "#58a6ff", pinned: "#f0883e", free: "#5fd38d"};
const mask = document.createElement("canvas");  // the object mask at frame size: white = object
let maskCtx = null;
let ws = null;
let uploaded = null;
let sentAt = 0, sendTimer = null;
let drawnTimes = [];

function setStatus(text, state) { const s = $("status"); s.textContent = text; s.dataset.state = state; }
function showError(text) { demo.lastError = text; demo.stats.errors += 1; $("error").textContent = text; }
function clearError() { $("error").textContent = ""; }  // a new action: an old refusal no longer applies
function send(msg) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(JSON.stringify(msg));
  demo.sent.push(msg.type === "start" && msg.image ? {...msg, image: "(data URL)"} : msg);
  if (demo.sent.length > 200) demo.sent.shift();
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}/ws`);
  ws.binaryType = "arraybuffer";  // frames: parsed with a DataView, no base64 anywhere
  ws.onmessage = (ev) => (typeof ev.data === "string" ? onMessage(JSON.parse(ev.data)) : onFrame(ev.data));
  ws.onclose = () => {
    if (!["busy", "closed"].includes($("status").dataset.state)) setStatus("Disconnected from the server. Reload the page to reconnect.", "error");
  };
}

function onMessage(m) {
  if (m.type === "hello") {
    Object.assign(demo, {W: m.width, H: m.height, fps: m.fps, chunkFrames: m.chunk_frames, maxPoints: m.limits.max_points,
                         maxUpload: m.limits.max_upload_bytes, trackHead: m.track_head, token: m.session,
                         format: m.frame_format, photoNotice: m.photo_notice || null});
    fit(m.width, m.height);
    setGrid(m.grid);
    mask.width = m.width; mask.height = m.height;
    maskCtx = mask.getContext("2d");
    clearMask();
    const sel = $("scene");
    sel.innerHTML = "";
    for (let k = 0; k < m.scenes; k++) {  // named by their captions (protocol 3; older servers: by number)
      const caption = (m.scene_captions || [])[k];
      const o = new Option(caption ? `${k}: ${caption.length > 42 ? caption.slice(0, 40) + "…" : caption}` : `synthetic scene ${k}`, k);
      o.title = caption || "";
      sel.add(o);
    }
    demo.sceneCaptions = m.scene_captions || null;
    previewScene();
    $("world").hidden = !demo.photoNotice;
    // the drag method that works on this student: its own tracks when it is track-conditioned
    $("method").value = m.track_head ? "tracks" : "latent";
    setStatus("Ready. Pick a scene or upload a picture, then press Start.", "ready");
    $("status").title = `${m.width}x${m.height} video at ${m.fps} frames a second, made on ${m.device} (${m.dtype})`;
  } else if (m.type === "busy") {
    setStatus(m.message, "busy");
    for (const b of document.querySelectorAll("button")) b.disabled = true;  // nothing here can start a stream
    $("scene").innerHTML = ""; $("scene").add(new Option("no session free: reload in a minute", ""));
  } else if (m.type === "started") {
    demo.started = true; demo.paused = false; demo.ended = false; dropQueue(() => true); demo.shown = null; demo.seen = new Set();
    demo.preview = null;
    setStatus("Playing. Drag points on the video to move it.", "streaming");
    $("status").title = `prompt: ${m.prompt}`;
    for (const b of ["pause", "restart", "save", "camera", "newprompt"]) $(b).disabled = false;
    $("resume").disabled = true;
  } else if (m.type === "chunk") {
    demo.stats.chunks += 1; demo.stats.chunk = m.index; demo.stats.latency = m.latency_ms; demo.stats.dropped = m.dropped;
    $("chunk").textContent = m.index; $("latency").textContent = m.latency_ms.toFixed(0); $("dropped").textContent = m.dropped;
  } else if (m.type === "paused" || m.type === "resumed") {
    demo.paused = m.type === "paused";
    $("pause").disabled = demo.paused; $("resume").disabled = !demo.paused;
    if (demo.ended) setStatus("Ended. Enter starts a new stream.", "paused");
    else if (demo.paused && tool() === "brush") setStatus("Paused while you brush the object: drag it, or Space to go on.", "paused");
    else setStatus(demo.paused ? "Paused: draw trajectories, then Space (or Resume) plays them." : "Playing. Drag points on the video to move it.",
                   demo.paused ? "paused" : "streaming");
    if (!demo.paused) playPaths();
  } else if (m.type === "dragged") {
    demo.dragged = m;
    clearMask();  // the brushed object was moved: its overlay goes with the action
    setStatus(`Object moved (took ${m.seconds.toFixed(1)} s).`, "streaming");
    $("status").title = `${m.mode}, ${m.method}: chunks ${m.chunks.join(", ")}`;
  } else if (m.type === "prompt") {
    demo.promptAt = m.chunk;
    setStatus(`New prompt from chunk ${m.chunk} on.`, "streaming");
    $("status").title = `prompt: ${m.prompt} (${m.passes} re-cache passes, ${m.ms} ms)`;
  } else if (m.type === "camera") {
    demo.camera = {...m, t0: performance.now()};
    demo.points = m.points.map((_, id) => ({id, x: 0, y: 0, pinned: false, hidden: true}));
    setStatus(`Moving the camera (${m.seconds} s).`, "streaming");
  } else if (m.type === "error") {
    showError(m.message);
    $("error").title = `refused: ${m.refused}`;
  } else if (m.type === "closing") {
    demo.closed = m.message;
    setStatus(m.message.charAt(0).toUpperCase() + m.message.slice(1) + ".", "closed");
  }
}

// the canvas takes the stream's aspect ratio: an integer zoom near 512 px for small frames, 1:1 for large
// ones (CSS may shrink it, keeping the ratio; toFrame maps through the drawn size, so clicks stay exact)
function fit(W, H) {
  const zoom = Math.max(1, Math.round(512 / Math.max(W, H)));
  view.width = W * zoom; view.height = H * zoom;
  demo.W = W; demo.H = H;
  draw();
}
demo.fit = fit;

const FORMATS = {1: "image/jpeg", 2: "image/webp"};
function onFrame(buf) {
  const head = new DataView(buf, 0, 16);  // protocol.py: "TSF1", n, chunk (uint32 LE), flags, format
  if (head.getUint32(0, false) !== 0x54534631) { showError("a binary message that is not a frame"); return; }
  const n = head.getUint32(4, true), chunk = head.getUint32(8, true), replaces = (head.getUint8(12) & 1) === 1;
  const blob = new Blob([new Uint8Array(buf, 16)], {type: FORMATS[head.getUint8(13)] || "image/jpeg"});
  demo.stats.received += 1; demo.stats.bytes += buf.byteLength;
  demo.seen.add(n);
  $("frames").textContent = demo.stats.received;
  $("kb").textContent = (demo.stats.bytes / demo.stats.received / 1024).toFixed(1);
  demo.frames.push({n, chunk, blob, replaces});
  if (demo.frames.length > 256) demo.frames.shift();
  if (replaces) dropQueue((f) => f.n >= n);  // an edit: its frames replace the old ones
  const f = {n, bitmap: null, failed: false};
  demo.queue.push(f);
  createImageBitmap(blob).then((b) => { f.bitmap = b; if (!demo.queue.includes(f)) b.close(); },
                                (e) => { f.failed = true; showError(`frame ${n} could not be decoded: ${e}`); });
}
function dropQueue(which) {  // frees the decoded bitmaps of the frames dropped from the queue
  demo.queue = demo.queue.filter((f) => { if (!which(f)) return true; if (f.bitmap) f.bitmap.close(); return false; });
}
demo.exportFrames = async () => {  // [[n, base64 image]] of the kept frames (the browser test reads them)
  const out = [];
  for (const f of demo.frames) {
    const bytes = new Uint8Array(await f.blob.arrayBuffer());
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    out.push([f.n, btoa(s)]);
  }
  return out;
};

// playback at the stream's frame rate; the queue is what the server sent ahead (in order: a frame
// still being decoded holds the ones behind it, a frame that failed to decode is skipped)
function cameraStep() {  // the points follow the camera move's keyframes; at its end they are the person's again
  const c = demo.camera;
  if (!c || c.done) return;
  const t = (performance.now() - c.t0) / 1000;
  let k = c.times.findIndex((v) => v > t);
  if (k < 0) { k = c.times.length - 1; c.done = true; }
  const k0 = Math.max(0, k - 1), u = c.done ? 1 : (t - c.times[k0]) / Math.max(c.times[k] - c.times[k0], 1e-6);
  for (const p of demo.points) {
    const a = c.points[p.id][k0], b = c.points[p.id][k];
    p.hidden = !a || !b;
    if (!p.hidden) { p.x = a[0] + u * (b[0] - a[0]); p.y = a[1] + u * (b[1] - a[1]); }
  }
  if (c.done) {
    demo.points = demo.points.filter((p) => !p.hidden);
    setStatus("Playing. Drag points on the video to move it.", "streaming");
  }
}

function tick() {
  cameraStep();
  pathStep();
  while (demo.queue.length && demo.queue[0].failed) demo.queue.shift();
  if (!demo.paused && demo.queue.length && demo.queue[0].bitmap) {
    const f = demo.queue.shift();
    if (demo.shown && demo.shown.bitmap) demo.shown.bitmap.close();
    demo.shown = f;
    demo.stats.drawn += 1;
    const now = performance.now();
    drawnTimes.push(now);
    while (drawnTimes.length && now - drawnTimes[0] > 1000) drawnTimes.shift();
    $("fps").textContent = drawnTimes.length;
  }
  draw();
}

function toCanvas(x, y) { return [(x + 0.5) * view.width / demo.W, (y + 0.5) * view.height / demo.H]; }
demo.toCanvas = toCanvas;
function toFrame(ev) {
  const r = view.getBoundingClientRect();
  const x = (ev.clientX - r.left) / r.width * demo.W - 0.5, y = (ev.clientY - r.top) / r.height * demo.H - 0.5;
  return [Math.min(Math.max(x, 0), demo.W - 1), Math.min(Math.max(y, 0), demo.H - 1)];
}
demo.toFrame = toFrame;

let dragPath = null;
function draw() {
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, view.width, view.height);
  if (demo.shown && demo.shown.bitmap) ctx.drawImage(demo.shown.bitmap, 0, 0, view.width, view.height);
  else if (demo.preview) drawPreview(demo.preview);
  if (maskCtx) {
    ctx.globalAlpha = 0.35;
    ctx.drawImage(maskOverlay(), 0, 0, view.width, view.height);
    ctx.globalAlpha = 1;
  }
  for (const g of demo.groups) {  // each grid's box in its tool's colour
    const [x0, y0] = toCanvas(g.box[0] - 0.5, g.box[1] - 0.5), [x1, y1] = toCanvas(g.box[2] - 0.5, g.box[3] - 0.5);
    ctx.strokeStyle = COLOURS[g.kind]; ctx.lineWidth = 1; ctx.setLineDash([4, 3]);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.setLineDash([]);
  }
  for (const p of demo.points.filter(inFrame)) {
    const [cx, cy] = toCanvas(p.x, p.y);
    ctx.beginPath();
    ctx.arc(cx, cy, 5, 0, 2 * Math.PI);
    const g = groupOf(p);
    ctx.fillStyle = g ? COLOURS[g.kind] : p.pinned ? COLOURS.pinned : COLOURS.free;
    ctx.fill();
    ctx.strokeStyle = "#000"; ctx.lineWidth = 1; ctx.stroke();
  }
  for (const t of demo.trajectories) line(t.path, COLOURS.path);
  if (demo.paths) for (const m of demo.paths.moves) line(m.path, COLOURS.path);
  if (dragPath && dragPath.length > 1) line(dragPath, COLOURS.path);
  if (boxFrom && boxTo) {
    const [x0, y0] = toCanvas(boxFrom[0], boxFrom[1]), [x1, y1] = toCanvas(boxTo[0], boxTo[1]);
    ctx.strokeStyle = COLOURS[tool()] || "#fff"; ctx.lineWidth = 1.5;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
}
function line(path, colour) {
  if (path.length < 2) return;
  ctx.strokeStyle = colour; ctx.lineWidth = 2;
  ctx.beginPath();
  path.forEach(([x, y], i) => { const [cx, cy] = toCanvas(x, y); i ? ctx.lineTo(cx, cy) : ctx.moveTo(cx, cy); });
  ctx.stroke();
}

// before Start: the chosen first frame (the scene's, from the server; or the picture, centre-cropped to the
// stream's aspect ratio as the server will crop it)
function drawPreview(img) {
  const r = Math.max(view.width / img.width, view.height / img.height), w = img.width * r, h = img.height * r;
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(img, (view.width - w) / 2, (view.height - h) / 2, w, h);
  ctx.imageSmoothingEnabled = false;
}
function previewScene() {
  const k = $("scene").value;
  if (k === "" || demo.started) return;
  const img = new Image();
  img.onload = () => { if (!uploaded) { demo.preview = img; demo.previewOf = `scene ${k}`; draw(); } };
  img.src = `/scene/${k}`;
  $("thumb").src = img.src;
  $("thumb").hidden = false;
}
demo.previewScene = previewScene;

let overlay = null, overlayDirty = true;
function maskOverlay() {  // the mask tinted red, rebuilt only after brushing
  if (!overlay) { overlay = document.createElement("canvas"); }
  if (overlayDirty) {
    overlay.width = mask.width; overlay.height = mask.height;
    const o = overlay.getContext("2d");
    const d = maskCtx.getImageData(0, 0, mask.width, mask.height);
    for (let i = 0; i < d.data.length; i += 4) { const on = d.data[i] > 127; d.data[i] = 255; d.data[i + 1] = 60; d.data[i + 2] = 60; d.data[i + 3] = on ? 255 : 0; }
    o.putImageData(d, 0, 0);
    overlayDirty = false;
  }
  return overlay;
}
function clearMask() { if (!maskCtx) return; maskCtx.fillStyle = "#000"; maskCtx.fillRect(0, 0, mask.width, mask.height); overlayDirty = true; }
demo.maskEmpty = () => maskEmpty();
function maskEmpty() {
  const d = maskCtx.getImageData(0, 0, mask.width, mask.height).data;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 127) return false;
  return true;
}

// -- points ------------------------------------------------------------------------------------

function sendPoints(now) {
  const go = () => { sentAt = performance.now(); sendTimer = null;
    send({type: "points", points: demo.points.filter(inFrame).map((p) => ({id: p.id, x: +p.x.toFixed(2), y: +p.y.toFixed(2), pinned: p.pinned}))}); };
  if (now) { if (sendTimer) clearTimeout(sendTimer); go(); return; }
  if (!sendTimer) sendTimer = setTimeout(go, Math.max(0, 50 - (performance.now() - sentAt)));
}
function freeId() {
  const used = new Set(demo.points.map((p) => p.id));
  for (let i = 0; i < demo.maxPoints; i++) if (!used.has(i)) return i;
  return -1;
}
function addPoint(x, y, pinned) {
  const id = freeId();
  if (id < 0) { showError(`at most ${demo.maxPoints} points`); return null; }
  const p = {id, x, y, pinned};
  demo.points.push(p);
  return p;
}

// -- the grid ----------------------------------------------------------------------------------
// hello's grid (protocol 2, protocol.py): the spacings the student was trained on (its data.placement), the
// range the control offers, the jitter. A hello without it (an older server): the old fixed grid, the cell
// centres at the shorter side / 8 (no offset, no jitter).
function setGrid(g) {
  const s8 = Math.min(demo.W, demo.H) / 8;
  g = g || {spacing: null, offer: [s8, s8], default: s8, jitter: 0, note: null, fixed: true};
  demo.grid = g;
  const c = $("spacing");
  c.min = g.offer[0]; c.max = g.offer[1]; c.value = g.default;
  c.disabled = g.offer[0] === g.offer[1];
  c.title = g.spacing
    ? `this network was trained on grids ${g.spacing[0]}-${g.spacing[1]} px apart` +
      (g.offer[0] > g.spacing[0] ? `; finer than ${g.offer[0]} px would take more than ${demo.maxPoints} points` : "")
    : "grid spacing in frame pixels";
  showSpacing();
  const n = $("gridnote");
  n.textContent = g.note ? g.note.charAt(0).toUpperCase() + g.note.slice(1) + "." : "";
  n.title = g.lattice ? `${n.textContent} The lattice: ${g.lattice}.` : "";
  n.hidden = !g.note;
}
function showSpacing() { $("spacingval").textContent = `${(+$("spacing").value).toFixed(1)} px`; }
$("spacing").oninput = showSpacing;

// a grid of spacing s (frame pixels) drawn as the training mixture draws one (data/placements.py, _grid): an
// offset r() * s - 0.5 on each axis, each point moved by up to jitter * s on each axis, the points inside the
// frame; row by row. With r = () => 0.5 (no offset, no jitter) the points are the cell centres
// (i + 0.5) * s - 0.5, i.e. placements.demo_grid(H, W, n) for s = W / n = H / n.
function gridPoints(W, H, s, jitter, r) {
  const ox = r() * s - 0.5, oy = r() * s - 0.5, points = [];
  for (let j = 0; oy + j * s < H - 0.5; j++) {
    for (let i = 0; ox + i * s < W - 0.5; i++) {
      const x = ox + i * s + (2 * r() - 1) * jitter * s, y = oy + j * s + (2 * r() - 1) * jitter * s;
      if (x >= 0 && y >= 0 && x <= W - 1 && y <= H - 1) points.push([x, y]);
    }
  }
  return {offset: [ox, oy], points};
}
demo.gridPoints = gridPoints;
demo.setGrid = setGrid;

function endCamera() {  // taking the points back ends the camera move where it is
  if (demo.camera && !demo.camera.done) {
    demo.camera.done = true;
    demo.points = demo.points.filter((p) => !p.hidden);
  }
}

$("grid").onclick = () => {  // a new grid at the chosen spacing, in place of the last one (your own points stay)
  clearError();
  endCamera();
  if (demo.points.some((p) => p.grid)) {  // the last grid is let go first, so no track ID jumps to a new place
    demo.points = demo.points.filter((p) => !p.grid);
    sendPoints(true);
  }
  const s = +$("spacing").value, jitter = demo.grid.jitter;
  const {offset, points} = gridPoints(demo.W, demo.H, s, jitter, demo.grid.fixed ? () => 0.5 : demo.random);
  let laid = 0, full = false;
  for (const [x, y] of points) {
    if (demo.points.some((p) => Math.hypot(p.x - x, p.y - y) < 1)) continue;
    const id = freeId();
    if (id < 0) { full = true; break; }
    demo.points.push({id, x, y, pinned: false, grid: true});
    laid += 1;
  }
  demo.lastGrid = {spacing: s, offset, jitter, points: points.length, laid};
  if (full) showError(`At most ${demo.maxPoints} points: ${laid} of this grid's ${points.length} laid (a wider spacing, or Clear points first).`);
  sendPoints(true);
};
$("clear").onclick = () => { demo.points = []; demo.groups = []; demo.trajectories = []; demo.paths = null; sendPoints(true); };
$("clearmask").onclick = clearMask;

let grabbed = null, grabFrom = null, painting = false, boxFrom = null, boxTo = null, drawing = null;
const tool = () => document.querySelector('input[name="tool"]:checked').value;
view.addEventListener("pointerdown", (ev) => {
  const [x, y] = toFrame(ev);
  view.setPointerCapture(ev.pointerId);
  clearError();
  endCamera();
  const t = tool();
  if (t === "static" || t === "moving") {
    const g = t === "moving" && demo.groups.find((g) => g.kind === "moving" && inBox(g.box, x, y, 1));
    if (g) { grabbed = {group: g}; grabFrom = [x, y]; return; }  // a moving grid: the whole of it follows
    boxFrom = [x, y]; boxTo = [x, y];
    return;
  }
  if (t === "path") {
    if (demo.started && !demo.paused) { showError("Pause first (Space), then draw trajectories: they play on resume."); return; }
    const ids = idsAt(x, y);
    if (ids === null) { showError("A static grid holds its points still: draw from a moving grid or a point."); return; }
    if (!ids.length) { showError("Start a trajectory on a point or inside a moving grid."); return; }
    drawing = {ids, path: [[x, y]]};
    return;
  }
  if (t === "brush" && demo.started && !demo.paused) send({type: "pause"});  // brush a still frame
  if (t === "points") {
    const reach = 12 * demo.W / view.getBoundingClientRect().width;  // 12 screen pixels, in frame pixels
    const near = demo.points.filter(inFrame).find((p) => Math.hypot(p.x - x, p.y - y) < reach);
    if (ev.shiftKey) {
      if (near) near.pinned = !near.pinned; else addPoint(x, y, true);
      sendPoints(true);
      return;
    }
    if ($("together").checked) {  // a camera move: grab the whole set wherever the drag starts
      if (!demo.points.some((p) => !p.pinned)) { showError("Add points first (Grid of points), then drag to move the camera."); return; }
      grabbed = near || {camera: true};
    } else {
      grabbed = near || addPoint(x, y, false);
    }
    grabFrom = [x, y];
    sendPoints(true);
  } else if (tool() === "brush") {
    painting = true; brush(x, y);
  } else {
    dragPath = [[x, y]];
  }
});
view.addEventListener("pointermove", (ev) => {
  const [x, y] = toFrame(ev);
  if (boxFrom) { boxTo = [x, y]; return; }
  if (drawing) {
    const last = drawing.path[drawing.path.length - 1];
    if (Math.hypot(x - last[0], y - last[1]) >= 0.5) drawing.path.push([x, y]);
    demo.trajectories = [...demo.trajectories.filter((d) => d !== drawing), drawing];
    return;
  }
  if (grabbed && grabbed.group) {
    const dx = x - grabFrom[0], dy = y - grabFrom[1], g = grabbed.group;
    grabFrom = [x, y];
    for (const p of demo.points) if (g.ids.includes(p.id)) { p.x = clamp(p.x + dx, demo.W); p.y = clamp(p.y + dy, demo.H); }
    g.box = [g.box[0] + dx, g.box[1] + dy, g.box[2] + dx, g.box[3] + dy];
    sendPoints(false);
    return;
  }
  if (grabbed) {
    const dx = x - grabFrom[0], dy = y - grabFrom[1];
    grabFrom = [x, y];
    if ($("together").checked) {  // a camera move: points may leave the frame (let go) and come back
      for (const p of demo.points) if (!p.pinned) { p.x += dx; p.y += dy; }
    } else if (!grabbed.camera) {
      grabbed.x = clamp(grabbed.x + dx, demo.W); grabbed.y = clamp(grabbed.y + dy, demo.H);
    }
    sendPoints(false);
  } else if (painting) {
    brush(x, y);
  } else if (dragPath) {
    const last = dragPath[dragPath.length - 1];
    if (Math.hypot(x - last[0], y - last[1]) >= 0.5) dragPath.push([x, y]);
  }
});
view.addEventListener("pointerup", () => {
  if (boxFrom) { layBox(tool(), boxFrom, boxTo); boxFrom = boxTo = null; return; }
  if (drawing) {
    if (drawing.path.length < 2) demo.trajectories = demo.trajectories.filter((d) => d !== drawing);
    drawing = null;
    return;
  }
  if (grabbed) { grabbed = null; sendPoints(true); }
  painting = false;
  if (dragPath) { sendDrag(dragPath); dragPath = null; }
});
// -- grids and trajectories (MotionStream's static grids, moving grids and pre-drawn trajectories) ----------------

function inBox(b, x, y, margin = 0) {
  return x >= Math.min(b[0], b[2]) - margin && x <= Math.max(b[0], b[2]) + margin &&
         y >= Math.min(b[1], b[3]) - margin && y <= Math.max(b[1], b[3]) + margin;
}
function groupOf(p) { return demo.groups.find((g) => g.ids.includes(p.id)); }
// the points a trajectory started at (x, y) moves: a grid's, or one point's
function idsAt(x, y) {
  const reach = 12 * demo.W / view.getBoundingClientRect().width;
  const near = demo.points.filter(inFrame).find((p) => Math.hypot(p.x - x, p.y - y) < reach);
  const g = (near && groupOf(near)) || demo.groups.find((g) => inBox(g.box, x, y, 1));
  if ((g && g.kind === "static") || (!g && near && near.pinned)) return null;  // held still: not moved by a path
  return g ? [...g.ids] : near ? [near.id] : [];
}
// a grid of the chosen spacing in the box from a to b (a click: the whole frame), laid as the Grid button lays one;
// static: its points pinned, held still; moving: free, and dragged together
function layBox(kind, a, b) {
  let box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  if (box[2] - box[0] < 1 && box[3] - box[1] < 1) box = [0, 0, demo.W - 1, demo.H - 1];
  const s = +$("spacing").value;
  const {points} = gridPoints(box[2] - box[0] + 1, box[3] - box[1] + 1, s, demo.grid.jitter, demo.random);
  const ids = [];
  for (const [u, v] of points) {
    const id = freeId();
    if (id < 0) { showError(`At most ${demo.maxPoints} points: ${ids.length} of this grid's ${points.length} laid.`); break; }
    demo.points.push({id, x: box[0] + u, y: box[1] + v, pinned: kind === "static"});
    ids.push(id);
  }
  if (ids.length) demo.groups.push({kind, box, ids, spacing: s});
  sendPoints(true);
}
function resample(path, u) {  // the point a fraction u of the way along the path (by length)
  const seg = [];
  let total = 0;
  for (let i = 1; i < path.length; i++) { const d = Math.hypot(path[i][0] - path[i - 1][0], path[i][1] - path[i - 1][1]); seg.push(d); total += d; }
  let want = u * total;
  for (let i = 0; i < seg.length; i++) {
    if (want <= seg[i] || i === seg.length - 1) {
      const f = seg[i] ? Math.min(want / seg[i], 1) : 1;
      return [path[i][0] + f * (path[i + 1][0] - path[i][0]), path[i][1] + f * (path[i + 1][1] - path[i][1])];
    }
    want -= seg[i];
  }
  return path[path.length - 1];
}
// on resume: every drawn trajectory plays at once, its points moved by the path's offset from its start over
// "trajectories play over" seconds of the video; then the points stay where the paths end
function playPaths() {
  if (!demo.trajectories.length) return;
  const byId = new Map(demo.points.map((p) => [p.id, p]));
  const moves = demo.trajectories.map((t) => ({ids: t.ids.filter((id) => byId.has(id)), path: t.path}))
    .map((m) => ({...m, base: m.ids.map((id) => [byId.get(id).x, byId.get(id).y]),
                  boxes: demo.groups.filter((g) => g.ids.every((id) => m.ids.includes(id))).map((g) => ({g, base: [...g.box]}))}));
  demo.paths = {t0: performance.now(), seconds: +$("pathseconds").value, moves};
  demo.trajectories = [];
}
function pathStep() {
  const P = demo.paths;
  if (!P || demo.paused) return;
  const u = Math.min((performance.now() - P.t0) / 1000 / P.seconds, 1);
  const byId = new Map(demo.points.map((p) => [p.id, p]));
  for (const m of P.moves) {
    const [x, y] = resample(m.path, u), dx = x - m.path[0][0], dy = y - m.path[0][1];
    m.ids.forEach((id, k) => { const p = byId.get(id); if (p) { p.x = m.base[k][0] + dx; p.y = m.base[k][1] + dy; } });
    for (const {g, base} of m.boxes) g.box = [base[0] + dx, base[1] + dy, base[2] + dx, base[3] + dy];
  }
  sendPoints(u >= 1);
  if (u >= 1) { demo.paths = null; }  // played: its overlay goes
}
demo.playPaths = playPaths;

function inFrame(p) { return !p.hidden && p.x >= 0 && p.y >= 0 && p.x <= demo.W - 1 && p.y <= demo.H - 1; }
function clamp(v, n) { return Math.min(Math.max(v, 0), n - 1); }
function brush(x, y) {
  maskCtx.fillStyle = "#fff";
  maskCtx.beginPath(); maskCtx.arc(x + 0.5, y + 0.5, Math.max(2, demo.W / 24), 0, 2 * Math.PI); maskCtx.fill();
  overlayDirty = true;
}

// -- DragStream --------------------------------------------------------------------------------

function sendDrag(path) {
  if (!maskCtx || maskEmpty()) { showError("brush over the object first (tool: brush the object)"); return; }
  const kind = $("kind").value;
  const msg = {type: "drag", mode: $("mode").value, kind, method: $("method").value,
               chunks: +$("chunks").value, iterations: +$("iterations").value, mask: {png: mask.toDataURL("image/png")}};
  if (kind === "translate") {
    if (path.length < 2) { showError("drag from the object to where it should go"); return; }
    const step = Math.max(1, Math.ceil(path.length / 64));
    msg.path = path.filter((_, i) => i % step === 0 || i === path.length - 1).map(([x, y]) => [+x.toFixed(2), +y.toFixed(2)]);
  } else {
    msg.center = path[0].map((v) => +v.toFixed(2));
    msg.degrees = +$("degrees").value;
  }
  setStatus("Moving the object…", "streaming");
  send(msg);
}

// -- stream controls ---------------------------------------------------------------------------

function showPhotoNotice(on) {  // after an upload, on a student trained on the synthetic world only
  const n = $("notice");
  n.textContent = on && demo.photoNotice ? `About your picture: ${demo.photoNotice}` : "";
  n.hidden = !n.textContent;
}
$("upload").onchange = () => {
  const f = $("upload").files[0];
  showPhotoNotice(Boolean(f));
  uploaded = null;
  if (!f) { previewScene(); return; }
  if (!/^image\/(png|jpeg|webp)$/.test(f.type)) { showError("upload a PNG, JPEG or WebP image"); return; }
  if (demo.maxUpload && f.size * 4 / 3 > demo.maxUpload) { showError(`the image is too large (at most ${demo.maxUpload} bytes as a data URL)`); return; }
  clearError();  // a valid picture: an earlier refusal of another one no longer applies
  const r = new FileReader();
  r.onload = () => {
    uploaded = r.result;
    const img = new Image();
    img.onload = () => { if (!demo.started) { demo.preview = img; demo.previewOf = "upload"; draw(); } };
    img.src = uploaded;
  };
  r.readAsDataURL(f);
};
$("scene").onchange = () => {  // a scene chosen after an upload is the first frame: the upload is let go
  uploaded = null; $("upload").value = ""; showPhotoNotice(false); clearError();
  previewScene();
};
$("start").onclick = () => {
  const msg = {type: "start"};
  if (uploaded) msg.image = uploaded; else msg.scene = +$("scene").value;
  if ($("prompt").value.trim()) msg.prompt = $("prompt").value.trim();
  $("error").textContent = "";
  dropQueue(() => true);
  send(msg);
};
$("pause").onclick = () => { clearError(); send({type: "pause"}); };
$("newprompt").onclick = () => {
  clearError();
  const text = $("prompt").value.trim();
  if (!text) { showError("Type a prompt first."); return; }
  send({type: "prompt", prompt: text});
};
$("camera").onclick = () => {
  clearError();
  const [path, sign] = $("campath").value.split(":");
  send({type: "camera", path, amount: +sign, seconds: +$("camseconds").value});
};
$("resume").onclick = () => send({type: "resume"});
$("restart").onclick = () => { dropQueue(() => true); send({type: "restart"}); };

// "Save video": the server encodes this stream's frames (as generated, edits included) to an mp4
$("save").onclick = async () => {
  if (!demo.token) return;
  $("save").disabled = true;
  setStatus("Preparing the video file…", $("status").dataset.state);
  try {
    const r = await fetch(`/video/${demo.token}?scale=${$("savescale").value}`);
    if (!r.ok) { showError(`save video: ${await r.text()}`); return; }
    const blob = await r.blob();
    const frames = +r.headers.get("X-Frames"), dropped = +r.headers.get("X-Frames-Dropped");
    demo.saved = {bytes: blob.size, frames, dropped};
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = $("savescale").value === "1" ? "trackstream.mp4" : `trackstream-x${$("savescale").value}.mp4`;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
    // the stream as data beside it: trackstream generate --session trackstream-session.npz makes it again
    const rs = await fetch(`/session/${demo.token}`);
    if (rs.ok) {
      const sess = await rs.blob();
      demo.saved.session = sess.size;
      const b = document.createElement("a");
      b.href = URL.createObjectURL(sess);
      b.download = "trackstream-session.npz";
      document.body.appendChild(b); b.click(); b.remove();
      setTimeout(() => URL.revokeObjectURL(b.href), 60000);
    }
    setStatus(`Saved ${frames} frames as trackstream.mp4 (${(blob.size / 1024).toFixed(0)} KiB)` +
              (dropped ? `; the oldest ${dropped} were no longer kept` : "") +
              (rs.ok ? ", and the session as trackstream-session.npz (generate --session replays it)" : "") + ".",
              demo.paused ? "paused" : "streaming");
  } finally {
    $("save").disabled = false;
  }
};

// MotionStream's keys: Enter starts / ends the stream, Space pauses / resumes it. No button keeps the focus (a
// focused button would take Space or Enter as its own click); typing in a field keeps its keys.
for (const b of document.querySelectorAll("button")) b.addEventListener("click", () => b.blur());
document.addEventListener("keydown", (ev) => {
  const el = ev.target;
  if (el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" || (el.tagName === "INPUT" && el.type !== "radio" && el.type !== "checkbox"))) return;
  if (ev.key === "Enter") {
    ev.preventDefault();
    if (!demo.started || demo.ended) { $("start").click(); return; }
    demo.ended = true;
    send({type: "pause"});
  } else if (ev.key === " ") {
    ev.preventDefault();
    if (!demo.started || demo.ended) return;
    send({type: demo.paused ? "resume" : "pause"});
  }
});

(function loop() { tick(); setTimeout(loop, 1000 / demo.fps); })();  // playback at the stream's rate
connect();
