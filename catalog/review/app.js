// vpf review: one pair at a time, source | mask | edited on one clock, verdicts from the keyboard.
// The server owns the truth (GET /api/queue, POST /api/review, POST /api/undo); this page only shows it.
"use strict";

(function () {
  const $ = function (id) { return document.getElementById(id); };
  const videos = Array.from(document.querySelectorAll("#videos video"));
  const page = {
    state: null,   // the last /api/queue answer (pairs carry their current review)
    index: 0,      // the pair shown
    busy: false,   // a POST is in flight: verdict keys wait for it
    rejecting: false,
  };

  // ------------------------------------------------------------------ one clock for three videos
  // The clock holds the position; the videos play natively and are pulled back to it when they drift, so one
  // play/pause and one scrub position drive all three, and they loop together at the shortest duration.
  const clock = {
    playing: false,
    offset: 0,     // position (s) when the clock last started or was set
    started: 0,    // performance.now() when it last started
    position: function () {
      return this.playing ? this.offset + (performance.now() - this.started) / 1000 : this.offset;
    },
    duration: function () {
      const known = videos.filter(function (v) { return v.src && isFinite(v.duration) && v.duration > 0; });
      return known.length ? Math.min.apply(null, known.map(function (v) { return v.duration; })) : 0;
    },
    set: function (t) {
      this.offset = t;
      this.started = performance.now();
      for (const v of videos) if (v.src && v.readyState >= 1) v.currentTime = t;
    },
    play: function () {
      if (this.playing) return;
      this.started = performance.now();
      this.playing = true;
      for (const v of videos) if (v.src) v.play().catch(function () {});
      $("play").textContent = "pause";
    },
    pause: function () {
      if (!this.playing) return;
      this.offset = this.position();
      this.playing = false;
      for (const v of videos) if (v.src) v.pause();
      this.set(this.offset);
      $("play").textContent = "play";
    },
    toggle: function () { if (this.playing) this.pause(); else this.play(); },
    reset: function () { this.playing = false; this.offset = 0; $("play").textContent = "play"; },
  };

  function tick() {
    const duration = clock.duration();
    let t = clock.position();
    if (duration > 0 && t >= duration) {
      t = t % duration;
      clock.set(t);
    }
    for (const v of videos) {
      if (!v.src || v.readyState < 1) continue;
      if (Math.abs(v.currentTime - t) > 0.1) v.currentTime = t;
      if (clock.playing && v.paused && !v.seeking) v.play().catch(function () {});
    }
    if (duration > 0 && document.activeElement !== $("scrub")) {
      $("scrub").value = String(Math.round((1000 * t) / duration));
    }
    $("clock").textContent = t.toFixed(2) + " s";
    window.requestAnimationFrame(tick);
  }

  $("play").addEventListener("click", function () {
    clock.toggle();
    $("play").blur(); // space is the page's play key: a focused button would toggle a second time
  });
  for (const v of videos) v.addEventListener("click", function () { clock.toggle(); });
  $("scrub").addEventListener("input", function () {
    const duration = clock.duration();
    if (duration > 0) clock.set((Number($("scrub").value) / 1000) * duration);
  });

  // ------------------------------------------------------------------ showing a pair
  function text(id, value) { $(id).textContent = value == null ? "" : String(value); }

  function counts() {
    const c = page.state.counts;
    return c.reviewed + " reviewed (" + c.accepted + " accepted, " + c.rejected + " rejected), " +
      c.session + " this session";
  }

  function showProgress() {
    const n = page.state.pairs.length;
    text("progress", n ? "pair " + (page.index + 1) + " of " + n + " · " + counts() : "0 pairs");
    const all = n > 0 && page.state.pairs.every(function (p) { return p.review; });
    $("done").hidden = !all;
  }

  function fact(dl, name, value, className) {
    if (value == null || value === "" || (Array.isArray(value) && !value.length)) return;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = Array.isArray(value) ? value.join(", ") : String(value);
    if (className) dd.className = className;
    dl.append(dt, dd);
  }

  function show(i) {
    const pairs = page.state.pairs;
    if (!pairs.length) return;
    page.index = Math.max(0, Math.min(pairs.length - 1, i));
    const pair = pairs[page.index];
    closeReasons();
    $("note").value = "";
    clock.reset();
    for (const v of videos) {
      const key = v.className;
      if (pair[key]) {
        if (v.getAttribute("src") !== pair[key]) v.src = pair[key];
        else v.currentTime = 0;
      } else {
        v.removeAttribute("src");
        v.load();
      }
      v.pause();
    }
    document.body.dataset.pairId = pair.id;
    text("instruction", pair.instruction);
    text("instruction-long", pair.instruction_long !== pair.instruction ? pair.instruction_long : "");
    const verdict = $("verdict");
    verdict.className = pair.review || "";
    verdict.textContent = pair.review ? "reviewed: " + pair.review : "not reviewed";
    const dl = $("facts");
    dl.replaceChildren();
    fact(dl, "gate", pair.decision, "decision-" + pair.decision);
    fact(dl, "gate reason", pair.decision_reason);
    fact(dl, "edit", pair.edit_type);
    fact(dl, "engine", pair.engine_version ? pair.engine + " " + pair.engine_version : pair.engine);
    fact(dl, "object", pair.object_label);
    fact(dl, "target caption", pair.target_caption);
    fact(dl, "flags", pair.quality_flags);
    fact(dl, "judge", pair.judge_reason);
    fact(dl, "run", pair.run_id);
    fact(dl, "pair", pair.id);
    const body = $("metrics").tBodies[0];
    body.replaceChildren();
    for (const m of pair.metrics || []) {
      const row = body.insertRow();
      row.insertCell().textContent = m.label;
      row.insertCell().textContent = String(m.value);
      row.insertCell().textContent = m.higher_is_better ? "higher is better" : "lower is better";
    }
    showProgress();
  }

  function nextOpen(from) {
    // The next pair after `from` with no review, wrapping round; -1 when every pair has one.
    const pairs = page.state.pairs;
    for (let k = 1; k <= pairs.length; k++) {
      const j = (from + k) % pairs.length;
      if (!pairs[j].review) return j;
    }
    return -1;
  }

  function advance() {
    const j = nextOpen(page.index);
    show(j === -1 ? page.index : j);
  }

  // ------------------------------------------------------------------ talking to the server
  function say(message) { text("message", message); }

  function post(path, body) {
    page.busy = true;
    return fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().then(function (answer) {
        if (!response.ok) throw new Error(answer.error || response.statusText);
        return answer;
      });
    }).finally(function () { page.busy = false; });
  }

  function review(verdict, reason) {
    if (page.busy) return;
    const pair = page.state.pairs[page.index];
    const body = { pair_id: pair.id, verdict: verdict };
    if (reason) body.reason = reason;
    const note = $("note").value.trim();
    if (note) body.note = note;
    closeReasons();
    post("/api/review", body).then(function (answer) {
      pair.review = verdict;
      page.state.counts = answer.counts;
      page.state.can_undo = true;
      say(verdict + (reason ? " (" + reason.replace(/_/g, " ") + ")" : "") + ": " + pair.instruction);
      advance();
    }, function (error) { say("not saved: " + error.message); });
  }

  function undo() {
    if (page.busy) return;
    post("/api/undo", {}).then(function (answer) {
      const pair = page.state.pairs[answer.index];
      pair.review = null;
      page.state.counts = answer.counts;
      page.state.can_undo = answer.can_undo;
      say("undone: " + pair.instruction);
      show(answer.index);
    }, function (error) { say(error.message); });
  }

  // ------------------------------------------------------------------ reasons
  function openReasons() {
    page.rejecting = true;
    $("reasons").hidden = false;
  }

  function closeReasons() {
    page.rejecting = false;
    $("reasons").hidden = true;
  }

  function fillReasons() {
    const list = $("reason-list");
    page.state.reasons.forEach(function (reason, k) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.reason = reason.key;
      button.textContent = (k + 1) + " " + reason.label;
      button.addEventListener("click", function () { review("rejected", reason.key); });
      item.appendChild(button);
      list.appendChild(item);
    });
  }

  // ------------------------------------------------------------------ keys
  document.addEventListener("keydown", function (event) {
    if (!page.state || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && (target.tagName === "INPUT" && target.type === "text" || target.tagName === "TEXTAREA")) {
      if (event.key === "Enter" || event.key === "Escape") target.blur();
      return;
    }
    if (!page.state.pairs.length) return;
    const key = event.key;
    if (page.rejecting) {
      const n = Number(key);
      if (Number.isInteger(n) && n >= 1 && n <= page.state.reasons.length) {
        review("rejected", page.state.reasons[n - 1].key);
      } else if (key === "Escape" || key === "r") {
        closeReasons();
      } else {
        return;
      }
      event.preventDefault();
      return;
    }
    switch (key) {
      case "a": review("accepted"); break;
      case "r": openReasons(); break;
      case "s": advance(); say("skipped"); break;
      case "u": undo(); break;
      case "n": case "ArrowRight": show(page.index + 1); break;
      case "p": case "ArrowLeft": show(page.index - 1); break;
      case " ": clock.toggle(); break;
      case "c": $("note").focus(); break;
      default: return;
    }
    event.preventDefault();
  });

  // ------------------------------------------------------------------ start
  fetch("/api/queue").then(function (response) {
    if (!response.ok) throw new Error("GET /api/queue: " + response.status);
    return response.json();
  }).then(function (state) {
    page.state = state;
    text("reviewer", "reviewer: " + state.reviewer);
    fillReasons();
    if (!state.pairs.length) {
      $("empty").hidden = false;
      showProgress();
    } else {
      const first = state.pairs.findIndex(function (p) { return !p.review; });
      show(first === -1 ? 0 : first);
    }
    document.body.dataset.state = "ready";
    window.requestAnimationFrame(tick);
  }).catch(function (error) {
    document.body.dataset.state = "error";
    text("progress", "cannot load the queue: " + error.message);
  });

  // For tests and the curious: what the page shows.
  window.vpfReview = {
    ready: function () { return document.body.dataset.state === "ready" && !page.busy; },
    index: function () { return page.index; },
    pairId: function () { return page.state && page.state.pairs.length ? page.state.pairs[page.index].id : null; },
    counts: function () { return page.state && page.state.counts; },
    rejecting: function () { return page.rejecting; },
    clock: function () { return { t: clock.position(), playing: clock.playing, duration: clock.duration() }; },
  };
})();
