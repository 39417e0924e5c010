import Hummingbird
import NIOCore

/// The browser UI: one page, its script and style, served by the binary (no CDN, no build step).
enum WebUI {
    static func collection() -> RouteCollection<SluiceRequestContext> {
        let router = RouteCollection(context: SluiceRequestContext.self)
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: page)))
        }
        router.get("/app.js") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/javascript; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: script)))
        }
        router.get("/app.css") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/css; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: style)))
        }
        return router
    }

    static let page = """
    <!doctype html>
    <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Sluice</title><link rel="stylesheet" href="/app.css"></head>
    <body>
    <header><h1>Sluice</h1><span id="model">loading…</span><span id="ready" class="pill">starting</span></header>
    <main>
    <section id="login" class="card wide" hidden>
      <h2>Log in</h2>
      <form id="login-form">
        <label>API key<input id="key" name="key" type="password" autocomplete="current-password" required></label>
        <div class="row buttons"><button id="login-submit" type="submit">Log in</button></div>
      </form>
      <div id="login-message" role="status"></div>
    </section>
    <section id="compose" class="card">
      <form id="form">
        <label>Prompt<textarea id="prompt" name="prompt" rows="3" required placeholder="a red fox in the snow"></textarea></label>
        <label>Negative prompt<textarea id="negative" name="negative_prompt" rows="2" placeholder="used when guidance &gt; 0"></textarea></label>
        <div class="row">
          <label>Seed<span class="inline"><input id="seed" type="number" value="-1" min="-1"><button type="button" id="random" title="draw a random seed">Random</button></span></label>
          <label>Steps<input id="steps" type="number" value="8" min="1" max="150"></label>
          <label>Guidance<input id="guidance" type="number" value="0" min="0" max="30" step="0.5"></label>
        </div>
        <div class="row">
          <label>Size<select id="size">
            <option value="1024x1024">1024 × 1024</option><option value="768x1024">768 × 1024</option>
            <option value="1024x768">1024 × 768</option><option value="512x512">512 × 512</option>
            <option value="256x256">256 × 256</option><option value="64x64">64 × 64</option></select></label>
          <label>Images<input id="count" type="number" value="1" min="1" max="8"></label>
        </div>
        <div class="row" id="sampler-row" hidden>
          <label>Sampler<select id="sampler"></select></label>
        </div>
        <div class="row" id="init-row" hidden>
          <label>Init image (PNG; its size is used)<span class="inline"><input id="init" type="file" accept="image/png"><button type="button" id="init-clear" disabled title="start from noise again">Clear</button></span><span id="init-text" class="hint"></span></label>
          <label>Strength <output id="strength-value">0.75</output><input id="strength" type="range" min="0.05" max="1" step="0.05" value="0.75"></label>
        </div>
        <div class="row buttons"><button id="submit" type="submit">Generate</button><button id="cancel" type="button" disabled>Cancel</button></div>
      </form>
      <div id="progress" hidden>
        <div class="bar"><div id="fill"></div></div>
        <div id="progress-text"></div>
        <img id="preview" alt="live preview">
      </div>
      <div id="message" role="status"></div>
    </section>
    <section class="card"><h2>Memory</h2><div class="legend"><span class="host">host RAM</span><span class="device" id="device-legend">device (simulated)</span><span id="memory-max"></span></div><canvas id="memory" width="600" height="140"></canvas><div id="memory-text"></div></section>
    <section class="card wide"><h2>Gallery</h2><div id="gallery"></div>
      <div class="row buttons"><button id="prev" type="button">Newer</button><span id="page"></span><button id="next" type="button">Older</button></div></section>
    </main>
    <script src="/app.js"></script>
    </body></html>
    """

    static let style = """
    :root { font-family: system-ui, sans-serif; color-scheme: light dark; }
    body { margin: 0; background: #f4f4f2; color: #1d1d1b; }
    [hidden] { display: none !important; }
    .hint { font-size: .75rem; opacity: .8; min-height: 1em; }
    @media (prefers-color-scheme: dark) { body { background: #161614; color: #e8e8e4; } .card { background: #22221f !important; } }
    header { display: flex; gap: 1rem; align-items: baseline; padding: .8rem 1.2rem; background: #0f4c5c; color: #fff; }
    header h1 { margin: 0; font-size: 1.3rem; }
    .pill { margin-left: auto; padding: .1rem .6rem; border-radius: 1rem; background: #e36414; font-size: .85rem; }
    .pill.ok { background: #2a9d8f; }
    main { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1rem; padding: 1rem; }
    .card { background: #fff; border-radius: .6rem; padding: 1rem; box-shadow: 0 1px 3px #0002; }
    .wide { grid-column: 1 / -1; }
    label { display: flex; flex-direction: column; font-size: .85rem; gap: .25rem; flex: 1; }
    textarea, input, select, button { font: inherit; padding: .4rem; border-radius: .35rem; border: 1px solid #9996; }
    .row { display: flex; gap: .8rem; margin-top: .6rem; flex-wrap: wrap; }
    .inline { display: flex; gap: .3rem; } .inline input { flex: 1; min-width: 0; }
    .inline input[type=file] { width: 0; }
    .buttons { align-items: center; }
    button { cursor: pointer; background: #0f4c5c; color: #fff; border: none; padding: .5rem 1rem; }
    button:disabled { opacity: .4; cursor: default; }
    #cancel { background: #9a031e; }
    .bar { height: .6rem; background: #9993; border-radius: .3rem; overflow: hidden; margin-top: 1rem; }
    #fill { height: 100%; width: 0; background: #2a9d8f; transition: width .2s; }
    #preview { margin-top: .6rem; width: 128px; image-rendering: pixelated; border-radius: .3rem; }
    #message { margin-top: .6rem; min-height: 1.2rem; }
    .error { color: #c1121f; }
    #gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: .8rem; }
    .item { display: flex; flex-direction: column; gap: .3rem; font-size: .8rem; }
    .item img { width: 100%; border-radius: .35rem; background: #9992; }
    .item .params { overflow-wrap: anywhere; max-height: 4.5em; overflow: hidden; }
    .item .actions { display: flex; gap: .3rem; } .item button { padding: .25rem .5rem; font-size: .75rem; }
    canvas { width: 100%; height: 140px; border-left: 1px solid #9996; border-bottom: 1px solid #9996; }
    h2 { margin: 0 0 .6rem; font-size: 1.1rem; }
    .legend { display: flex; gap: 1rem; font-size: .8rem; margin-bottom: .3rem; }
    .legend .host::before, .legend .device::before { content: ""; display: inline-block; width: .8rem; height: .2rem; margin-right: .3rem; vertical-align: middle; }
    .legend .host::before { background: #2a9d8f; } .legend .device::before { background: #e36414; }
    #memory-max { margin-left: auto; }
    @media (max-width: 720px) { main { grid-template-columns: 1fr; padding: .5rem; } }
    """

    static let script = """
    "use strict";
    const $ = (id) => document.getElementById(id);
    let page = 0, current = null, events = null, started = false;
    const perPage = 12;

    // The key is never stored by the page: logging in sets an HttpOnly session cookie, which every
    // request (images and event streams included) then carries.
    async function api(path, options = {}) {
      const r = await fetch(path, options);
      if (r.status === 401) { showLogin(); throw new Error("log in with the server's API key"); }
      const body = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
      if (!r.ok) throw new Error(body?.error?.message || r.statusText);
      return body;
    }
    function showLogin() { $("login").hidden = false; $("key").focus(); }
    async function login(e) {
      e.preventDefault();
      const r = await fetch("/api/login", { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify({ key: $("key").value }) });
      $("key").value = "";
      if (!r.ok) { $("login-message").textContent = "that is not this server's key"; return; }
      $("login").hidden = true; $("login-message").textContent = "";
      start();
    }
    function say(text, error = false) { $("message").textContent = text; $("message").className = error ? "error" : ""; }

    async function pollReady() {
      try {
        const s = await api("/api/status");
        $("model").textContent = s.model || "loading…";
        $("ready").textContent = s.ready ? "ready" : "loading";
        $("ready").className = "pill" + (s.ready ? " ok" : "");
        drawMemory(s);
        if (s.ready) showModelControls(s);
        if (!s.ready) setTimeout(pollReady, 1000);
      } catch (e) { if ($("login").hidden) setTimeout(pollReady, 2000); }
    }

    // The model's own choices: a sampler menu when it has more than one, the init image when it
    // takes one (image to image).
    function showModelControls(s) {
      const names = s.samplers || [];
      const menu = $("sampler");
      if (names.length > 1 && menu.options.length === 0) {
        names.forEach((n, i) => { const o = document.createElement("option"); o.value = n; o.textContent = n + (i === 0 ? " (default)" : ""); menu.append(o); });
      }
      $("sampler-row").hidden = names.length <= 1;
      $("init-row").hidden = !s.image_to_image;
    }

    // The chosen PNG as a data: URL (the API takes it with or without the prefix).
    function readInit() {
      const file = $("init").files[0];
      if (!file || $("init-row").hidden) return Promise.resolve(null);
      return new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => reject(new Error("cannot read " + file.name));
        reader.readAsDataURL(file);
      });
    }
    function initChanged() {
      const file = $("init").files[0];
      $("size").disabled = !!file; $("init-clear").disabled = !file; $("init-text").textContent = "";
      if (!file) return;
      const img = new Image(), url = URL.createObjectURL(file);
      img.onload = () => { $("init-text").textContent = img.naturalWidth + " × " + img.naturalHeight; URL.revokeObjectURL(url); };
      img.onerror = () => { $("init-text").textContent = "not an image this browser reads"; URL.revokeObjectURL(url); };
      img.src = url;
    }

    function drawMemory(s) {
      const c = $("memory"), g = c.getContext("2d");
      const samples = s.memory_timeline || [];
      g.clearRect(0, 0, c.width, c.height);
      const now = s.memory_now || {};
      const gib = (b) => (b / 1073741824).toFixed(2) + " GiB";
      let text = "host now " + gib(now.host_bytes || 0);
      const real = s.device_memory === "vulkan";
      $("device-legend").textContent = s.workers ? "device (on the workers)" : real ? "device (Vulkan buffers)" : "device (simulated)";
      if (s.device_budget_bytes) text += " · device budget " + gib(s.device_budget_bytes) + (real ? " (Vulkan: " + s.device_name + ")" : " (" + s.profile + ", simulated)");
      if (s.queue_length !== undefined) text += " · queue " + s.queue_length + "/" + s.queue_capacity;
      if (s.workers) {
        const live = s.workers.filter((w) => w.model === s.route && w.seconds_since_heartbeat < 60);
        text += " · " + live.length + " worker" + (live.length === 1 ? "" : "s") + " (" + ((s.queue_depths || {})[s.route] || 0) + " waiting)";
      }
      if (s.queue_error) text += " · queue database: " + s.queue_error;
      $("memory-text").textContent = text;
      if (samples.length < 2) return;
      const max = Math.max(...samples.map((m) => Math.max(m.host_bytes, m.device_bytes || 0)), 1) * 1.1;
      $("memory-max").textContent = "top " + gib(max);
      const t0 = samples[0].time, t1 = samples[samples.length - 1].time || t0 + 1;
      const line = (key, color) => {
        g.beginPath(); g.strokeStyle = color; g.lineWidth = 2;
        samples.forEach((m, i) => {
          const x = (m.time - t0) / Math.max(t1 - t0, 1e-6) * (c.width - 4) + 2;
          const y = c.height - 4 - (m[key] || 0) / max * (c.height - 8);
          i ? g.lineTo(x, y) : g.moveTo(x, y);
        });
        g.stroke();
      };
      line("host_bytes", "#2a9d8f");
      if (samples.some((m) => m.device_bytes)) line("device_bytes", "#e36414");
    }

    async function submit(ev) {
      ev.preventDefault();
      const [w, h] = $("size").value.split("x").map(Number);
      const body = { prompt: $("prompt").value, negative_prompt: $("negative").value, seed: Number($("seed").value),
        steps: Number($("steps").value), guidance: Number($("guidance").value), width: w, height: h, count: Number($("count").value) };
      if (!$("sampler-row").hidden && $("sampler").value) body.sampler = $("sampler").value;
      try {
        const init = await readInit();
        if (init) { body.init_image = init; body.strength = Number($("strength").value); delete body.width; delete body.height; }
        const job = await api("/api/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        current = job.id;
        say("queued (position " + job.position + ", seed " + job.seed + ")");
        $("cancel").disabled = false;
        $("progress").hidden = false;
        $("fill").style.width = "0";
        follow(job.id);
      } catch (e) { say(e.message, true); }
    }

    function follow(id) {
      if (events) events.close();
      events = new EventSource("/api/jobs/" + id + "/events");
      const update = (msg) => {
        const e = JSON.parse(msg.data);
        if (e.state === "running" && $("message").textContent.startsWith("queued")) say("running");
        if (e.state === "running" && e.steps) {
          const done = ((e.image || 1) - 1) * e.steps + (e.step || 0), all = e.steps * (e.images || 1);
          $("fill").style.width = (100 * done / all) + "%";
          let t = (e.phase || "") + " · step " + (e.step || 0) + "/" + e.steps;
          if (e.images > 1) t += " · image " + e.image + "/" + e.images;
          if (e.seconds_per_step) t += " · " + e.seconds_per_step.toFixed(2) + " s/it · ETA " + Math.round(e.eta_seconds) + " s";
          $("progress-text").textContent = t;
          if (e.preview) $("preview").src = "data:image/png;base64," + e.preview;
        }
        if (["done", "failed", "cancelled"].includes(e.state)) {
          events.close(); events = null; current = null;
          $("cancel").disabled = true;
          $("fill").style.width = e.state === "done" ? "100%" : $("fill").style.width;
          say(e.state === "done" ? "done" : e.state + (e.error ? ": " + e.error : ""), e.state === "failed");
          page = 0; loadGallery();
          api("/api/status").then(drawMemory).catch(() => {});
        }
      };
      ["queued", "running", "done", "failed", "cancelled"].forEach((n) => events.addEventListener(n, update));
    }

    async function cancel() {
      if (!current) return;
      try { await api("/api/jobs/" + current, { method: "DELETE" }); say("cancelling…"); } catch (e) { say(e.message, true); }
    }

    async function loadGallery() {
      try {
        const g = await api("/api/gallery?page=" + page + "&per_page=" + perPage);
        const box = $("gallery");
        box.replaceChildren();
        for (const item of g.items) {
          const p = item.parameters;
          const div = document.createElement("div"); div.className = "item";
          const img = document.createElement("img");
          img.src = "/api/gallery/" + item.id + ".png"; img.alt = p.prompt; img.loading = "lazy";
          const text = document.createElement("div"); text.className = "params";
          text.textContent = p.prompt + " — seed " + p.seed + ", " + p.steps + " steps, " + p.width + "×" + p.height + ", guidance " + p.guidance
            + (p.sampler ? ", " + p.sampler : "") + (p.strength !== undefined ? ", from an init image at strength " + p.strength : "");
          const actions = document.createElement("div"); actions.className = "actions";
          const reuse = document.createElement("button"); reuse.textContent = "Reuse settings";
          reuse.onclick = () => { $("prompt").value = p.prompt; $("negative").value = p.negative_prompt || ""; $("seed").value = p.seed;
            $("steps").value = p.steps; $("guidance").value = p.guidance; $("size").value = p.width + "x" + p.height;
            if (!$("sampler-row").hidden) { $("sampler").value = p.sampler || ""; if ($("sampler").selectedIndex < 0) $("sampler").selectedIndex = 0; }
            if (p.strength !== undefined && !$("init-row").hidden) { $("strength").value = p.strength; $("strength-value").textContent = p.strength; }
            window.scrollTo(0, 0); };
          const del = document.createElement("button"); del.textContent = "Delete";
          del.onclick = async () => { await api("/api/gallery/" + item.id, { method: "DELETE" }); loadGallery(); };
          actions.append(reuse, del);
          div.append(img, text, actions);
          box.append(div);
        }
        const pages = Math.max(1, Math.ceil(g.total / perPage));
        $("page").textContent = "page " + (page + 1) + " of " + pages + " (" + g.total + " images)";
        $("prev").disabled = page === 0; $("next").disabled = page + 1 >= pages;
      } catch (e) { say(e.message, true); }
    }

    $("form").addEventListener("submit", submit);
    $("cancel").addEventListener("click", cancel);
    $("init").addEventListener("change", initChanged);
    $("init-clear").addEventListener("click", () => { $("init").value = ""; initChanged(); });
    $("strength").addEventListener("input", () => { $("strength-value").textContent = $("strength").value; });
    $("random").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 4294967295); });
    $("prev").addEventListener("click", () => { page = Math.max(0, page - 1); loadGallery(); });
    $("next").addEventListener("click", () => { page += 1; loadGallery(); });
    $("login-form").addEventListener("submit", login);
    function start() {
      if (started) { pollReady(); loadGallery(); return; }
      started = true;
      pollReady(); loadGallery();
      setInterval(async () => { if ($("login").hidden) { try { drawMemory(await api("/api/status")); } catch (e) {} } }, 2000);
    }
    fetch("/api/session").then((r) => r.json()).then((s) => { if (s.key_required && !s.logged_in) showLogin(); else start(); });
    """
}
