// VideoPainter Factory gallery: filter, sort and page through pairs; play source | mask | target in sync.
//
// data/index.js defines window.VPF_GALLERY_INDEX: every pair's facets (as codes into `dicts`) and metrics,
// column-wise, in site order. Pair i's details live in data/chunks/<floor(i / chunk_size)>.js, which calls
// VPF_GALLERY_CHUNK(n, rows). Chunks are loaded with <script> tags, never fetch(), so file:// works too.
(function () {
  "use strict";

  const INDEX = window.VPF_GALLERY_INDEX;
  const form = document.getElementById("controls");
  const grid = document.getElementById("grid");
  const summary = document.getElementById("summary");
  const empty = document.getElementById("empty");
  const DEFAULTS = { edit_type: "", decision: "", engine: "", metric: "", min: "", max: "", sort: "", order: "desc", size: "24", page: "1" };

  if (!INDEX) {
    summary.textContent = "data/index.js is missing: rebuild the gallery with `vpf gallery`.";
    return;
  }

  // ------------------------------------------------------------------ chunks
  const chunks = new Map(); // chunk number -> rows
  const loading = new Map(); // chunk number -> Promise
  window.VPF_GALLERY_CHUNK = function (n, rows) {
    chunks.set(n, rows);
  };

  function loadChunk(n) {
    if (chunks.has(n)) return Promise.resolve();
    if (loading.has(n)) return loading.get(n);
    const promise = new Promise(function (resolve, reject) {
      const script = document.createElement("script");
      script.src = "data/chunks/" + String(n).padStart(5, "0") + ".js";
      script.onload = function () {
        loading.delete(n);
        if (chunks.has(n)) resolve();
        else reject(new Error(script.src + " did not define chunk " + n));
      };
      script.onerror = function () {
        loading.delete(n);
        reject(new Error("could not load " + script.src));
      };
      document.head.appendChild(script);
    });
    loading.set(n, promise);
    return promise;
  }

  function pairAt(i) {
    return chunks.get(Math.floor(i / INDEX.chunk_size))[i % INDEX.chunk_size];
  }

  // ------------------------------------------------------------------ state <-> URL hash and form
  function readState() {
    const params = new URLSearchParams(location.hash.slice(1));
    const state = {};
    for (const key of Object.keys(DEFAULTS)) state[key] = params.has(key) ? params.get(key) : DEFAULTS[key];
    return state;
  }

  function writeState(state) {
    const params = new URLSearchParams();
    for (const key of Object.keys(DEFAULTS)) if (state[key] !== DEFAULTS[key]) params.set(key, state[key]);
    const hash = params.toString();
    if (hash !== location.hash.slice(1)) history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
  }

  function option(select, value, text) {
    const el = document.createElement("option");
    el.value = value;
    el.textContent = text;
    select.appendChild(el);
  }

  function fillControls() {
    for (const facet of INDEX.facets) {
      const select = form.elements[facet];
      const counts = new Array(INDEX.dicts[facet].length).fill(0);
      for (const code of INDEX.columns[facet]) counts[code] += 1;
      option(select, "", "all");
      INDEX.dicts[facet].forEach(function (name, code) {
        option(select, name, (name || "(none)") + " (" + counts[code] + ")");
      });
    }
    option(form.elements.metric, "", "none");
    option(form.elements.sort, "", "catalog order");
    for (const m of INDEX.metrics) {
      option(form.elements.metric, m.name, m.label);
      option(form.elements.sort, m.name, m.label);
    }
  }

  function syncForm(state) {
    for (const key of Object.keys(DEFAULTS)) {
      const el = form.elements[key];
      if (!el) continue;
      el.value = state[key];
      if (el.value !== state[key]) state[key] = DEFAULTS[key]; // a value the data does not offer
    }
  }

  // ------------------------------------------------------------------ filter and sort
  function selection(state) {
    const cols = INDEX.columns;
    const wanted = {};
    for (const facet of INDEX.facets) wanted[facet] = state[facet] === "" ? -1 : INDEX.dicts[facet].indexOf(state[facet]);
    const metric = state.metric ? cols[state.metric] : null;
    const lo = metric && state.min !== "" ? Number(state.min) : -Infinity;
    const hi = metric && state.max !== "" ? Number(state.max) : Infinity;
    const ranged = metric && (lo !== -Infinity || hi !== Infinity);
    const out = new Int32Array(INDEX.total);
    let k = 0;
    for (let i = 0; i < INDEX.total; i++) {
      let keep = true;
      for (const facet of INDEX.facets) {
        if (wanted[facet] !== -1 && cols[facet][i] !== wanted[facet]) { keep = false; break; }
      }
      if (keep && ranged) {
        const v = metric[i];
        keep = v !== null && v >= lo && v <= hi;
      }
      if (keep) out[k++] = i;
    }
    let picked = out.subarray(0, k);
    if (!state.sort && state.order === "desc") {
      picked = picked.slice().reverse(); // catalog order, newest first
    } else if (state.sort) {
      const values = cols[state.sort];
      const sign = state.order === "asc" ? 1 : -1;
      picked = Array.from(picked).sort(function (a, b) {
        const va = values[a], vb = values[b];
        if (va === null || vb === null) return va === vb ? a - b : va === null ? 1 : -1; // missing values last
        return va === vb ? a - b : sign * (va < vb ? -1 : 1);
      });
    }
    return picked;
  }

  // ------------------------------------------------------------------ cards
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function formatNumber(v) {
    if (v === null || v === undefined) return "–";
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 1000 || (Math.abs(v) < 0.001 && v !== 0) ? v.toExponential(2) : v.toPrecision(4);
  }

  // One play/pause button and one scrubber drive the three videos; the others follow the first one that plays.
  function syncedPlayer(videos) {
    const bar = el("div", "player");
    const button = el("button", "play", "play");
    button.type = "button";
    const scrub = el("input");
    scrub.type = "range";
    scrub.min = "0";
    scrub.max = "1000";
    scrub.value = "0";
    scrub.setAttribute("aria-label", "position");
    bar.append(button, scrub);
    if (!videos.length) {
      button.disabled = scrub.disabled = true;
      return bar;
    }
    const master = videos[0];
    const followers = videos.slice(1);
    function align() {
      for (const v of followers) {
        if (Math.abs(v.currentTime - master.currentTime) > 0.08) v.currentTime = master.currentTime;
      }
    }
    function toggle() {
      if (master.paused) {
        align();
        for (const v of videos) v.play().catch(function () {});
      } else {
        for (const v of videos) v.pause();
        align();
      }
    }
    button.addEventListener("click", toggle);
    for (const v of videos) v.addEventListener("click", toggle);
    master.addEventListener("play", function () { button.textContent = "pause"; });
    master.addEventListener("pause", function () { button.textContent = "play"; });
    master.addEventListener("timeupdate", function () {
      if (master.duration) scrub.value = String(Math.round((1000 * master.currentTime) / master.duration));
      if (!master.paused) align();
    });
    master.addEventListener("seeked", align);
    scrub.addEventListener("input", function () {
      if (!master.duration) return;
      const t = (Number(scrub.value) / 1000) * master.duration;
      for (const v of videos) v.currentTime = t;
    });
    return bar;
  }

  function card(pair) {
    const article = el("article", "card");
    article.dataset.pairId = pair.id;
    article.dataset.editType = pair.edit_type || "";
    article.dataset.decision = pair.decision || "";
    article.dataset.engine = pair.engine || "";

    const strip = el("div", "videos");
    const videos = [];
    for (const [key, label] of [["src", "source"], ["mask", "mask"], ["tgt", "target"]]) {
      const figure = el("figure");
      const missing = (pair.missing || []).indexOf(key) !== -1;
      if (pair[key] && !missing) {
        const video = el("video", key);
        video.muted = true;
        video.loop = true;
        video.playsInline = true;
        video.preload = "metadata";
        video.src = pair[key];
        videos.push(video);
        figure.appendChild(video);
      } else {
        figure.appendChild(el("div", "no-media", missing ? "missing" : "no video"));
      }
      figure.appendChild(el("figcaption", null, label));
      strip.appendChild(figure);
    }
    article.appendChild(strip);
    article.appendChild(syncedPlayer(videos));

    article.appendChild(el("p", "instruction", pair.instruction));
    if (pair.instruction_long && pair.instruction_long !== pair.instruction) {
      article.appendChild(el("p", "instruction-long", pair.instruction_long));
    }
    const tags = el("ul", "tags");
    tags.appendChild(el("li", "edit-type", pair.edit_type));
    tags.appendChild(el("li", "engine", pair.engine + (pair.engine_version ? " " + pair.engine_version : "")));
    tags.appendChild(el("li", "decision decision-" + (pair.decision || "none"), pair.decision || "undecided"));
    if (pair.label) tags.appendChild(el("li", "label", pair.label));
    for (const flag of pair.quality_flags || []) tags.appendChild(el("li", "flag", flag));
    article.appendChild(tags);

    const metrics = el("dl", "metrics");
    for (const m of INDEX.metrics) {
      if (!(m.name in (pair.metrics || {}))) continue;
      const row = el("div");
      row.append(el("dt", null, m.label), el("dd", null, formatNumber(pair.metrics[m.name])));
      metrics.appendChild(row);
    }
    article.appendChild(metrics);
    if (pair.decision_reason) article.appendChild(el("p", "reason", pair.decision_reason));

    const details = el("details");
    details.appendChild(el("summary", null, "ids"));
    for (const key of ["id", "render_id", "clip_id", "run_id", "created_at"]) {
      if (!pair[key]) continue;
      const line = el("div");
      line.append(key + ": ", el("code", null, pair[key]));
      details.appendChild(line);
    }
    if (pair.sheet) {
      const link = el("a", null, "contact sheet");
      link.href = pair.sheet;
      details.appendChild(link);
    }
    article.appendChild(details);
    return article;
  }

  // ------------------------------------------------------------------ render
  let picked = new Int32Array(0);
  let renderToken = 0;

  function render(state) {
    const token = ++renderToken;
    const size = Number(state.size) || 24;
    const pages = Math.max(1, Math.ceil(picked.length / size));
    const page = Math.min(Math.max(1, Number(state.page) || 1), pages);
    state.page = currentPage = String(page);
    writeState(state);
    const start = (page - 1) * size;
    const slice = Array.from(picked.slice(start, start + size));
    const needed = Array.from(new Set(slice.map(function (i) { return Math.floor(i / INDEX.chunk_size); })));

    summary.textContent =
      picked.length + " of " + INDEX.total + " pairs" + (INDEX.where ? " (catalog filter: " + INDEX.where + ")" : "");
    for (const label of document.querySelectorAll(".page-label")) label.textContent = "page " + page + " of " + pages;
    for (const b of document.querySelectorAll(".pager button")) {
      const step = Number(b.dataset.step);
      b.disabled = (step < 0 && page <= 1) || (step > 0 && page >= pages);
    }
    document.body.dataset.state = "loading";
    return Promise.all(needed.map(loadChunk)).then(
      function () {
        if (token !== renderToken) return; // a newer render started meanwhile
        for (const v of grid.querySelectorAll("video")) {
          v.pause();
          v.removeAttribute("src");
          v.load(); // release the media of cards going away
        }
        grid.replaceChildren.apply(grid, slice.map(function (i) { return card(pairAt(i)); }));
        empty.hidden = picked.length !== 0;
        document.body.dataset.state = "ready";
      },
      function (error) {
        summary.textContent = String(error.message || error);
        document.body.dataset.state = "error";
      }
    );
  }

  let currentPage = "1";

  function readStateFromForm() {
    const state = {};
    for (const key of Object.keys(DEFAULTS)) {
      const input = form.elements[key];
      state[key] = input ? input.value : DEFAULTS[key];
    }
    state.page = currentPage;
    return state;
  }

  // Re-select (filters or sort changed) and show page `page`.
  function update(page) {
    currentPage = String(page);
    const state = readStateFromForm();
    picked = selection(state);
    return render(state);
  }

  // ------------------------------------------------------------------ wiring
  document.getElementById("title").textContent = INDEX.title;
  document.title = INDEX.title;
  fillControls();
  const initial = readState();
  syncForm(initial);

  form.addEventListener("change", function () { update(1); });
  form.addEventListener("submit", function (event) { event.preventDefault(); });
  form.addEventListener("reset", function () {
    // The browser resets the fields after this event: apply the defaults once it has.
    setTimeout(function () {
      syncForm(Object.assign({}, DEFAULTS));
      update(1);
    }, 0);
  });
  for (const b of document.querySelectorAll(".pager button")) {
    b.addEventListener("click", function () {
      currentPage = String(Number(currentPage) + Number(b.dataset.step));
      render(readStateFromForm()).then(function () { window.scrollTo(0, 0); });
    });
  }

  // For tests and the console: how many pairs match the current filters; whether the page finished rendering.
  window.vpfGallery = {
    matching: function () { return picked.length; },
    ready: function () { return document.body.dataset.state === "ready"; },
  };

  update(initial.page);
})();
