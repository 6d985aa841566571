// pairx review: keyboard-first decisions, the interactive PAIR-X viewer and AMD's attributes.
// Plain JS, no build step; everything the server renders works without it except the viewer.
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const csrf = () => $('meta[name="csrf-token"]').content;

  async function post(url, data) {
    const resp = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(data || {}),
    });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(body.error || resp.statusText);
    return body;
  }

  // -- page-wide: help, blind mode, htmx CSRF header ---------------------------------------
  document.addEventListener("htmx:configRequest", (ev) => {
    ev.detail.headers["X-CSRF-Token"] = csrf();
  });
  const help = $("#help");
  const toggleHelp = (show) => help && help.classList.toggle("hidden", !show);
  const blindOn = () => document.cookie.split("; ").includes("pairx_blind=1");
  function toggleBlind() {
    document.cookie = "pairx_blind=" + (blindOn() ? "0" : "1") + "; path=/; samesite=strict";
    location.reload();
  }
  document.addEventListener("DOMContentLoaded", () => {
    const open = $("#help-open"), close = $("#help-close"), blind = $("#blind-toggle");
    if (open) open.addEventListener("click", () => toggleHelp(true));
    if (close) close.addEventListener("click", () => toggleHelp(false));
    if (blind) blind.addEventListener("click", toggleBlind);
    if ($("#review-data")) Review();
  });
  const typing = (ev) => ["INPUT", "TEXTAREA", "SELECT"].includes(ev.target.tagName) &&
    !(ev.target.type === "range" || ev.target.type === "checkbox");
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") { toggleHelp(false); if (typing(ev)) ev.target.blur(); return; }
    if (typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "?") { toggleHelp(help.classList.contains("hidden")); ev.preventDefault(); }
    else if (ev.key === "b") toggleBlind();
  });

  // -- the review page ------------------------------------------------------------------------
  function Review() {
    const R = JSON.parse($("#review-data").textContent);
    const cands = R.candidates;
    const S = {
      sel: firstUndecided(0), layer: $("#layer").value, results: {}, data: null, key: "",
      zoom: 1, tx: 0, ty: 0, rot: 0, flip: false, active: null, pinned: false, polling: null,
      progress: {}, // view -> its last status (PAIR-X layer, AMD)
    };
    // AMD beside PAIR-X, where the project has an interpreter: its own view in the job queue
    const amdView = $("#attributes") ? $("#attributes").dataset.view : null;
    const A = { results: {}, data: null, key: "", active: null, all: false };
    const TOP_ATTRIBUTES = 5; // rows shown until "all attributes" is pressed
    const panels = { a: $("#panel-a"), b: $("#panel-b") };
    const flash = (text) => { $("#flash").textContent = text; };

    function firstUndecided(from) {
      for (let i = 0; i < cands.length; i++) {
        const j = (from + i) % cands.length;
        if (!cands[j].decision) return j;
      }
      return Math.min(from, cands.length - 1);
    }

    // ---- candidate selection and decisions ----
    function select(i) {
      if (!cands.length) return;
      S.sel = Math.max(0, Math.min(cands.length - 1, i));
      $$(".cand").forEach((el) => el.classList.toggle("selected", +el.dataset.index === S.sel));
      const el = $("#cand-" + S.sel);
      if (el) el.scrollIntoView({ block: "nearest" });
      S.active = null; S.pinned = false; S.rot = 0; S.flip = false; A.active = null;
      show();
      showAmd();
    }
    function paintDecisions(decisions) {
      cands.forEach((c) => { c.decision = decisions[String(c.id)] || ""; });
      $$(".cand").forEach((el) => {
        const d = cands[+el.dataset.index].decision, badge = $(".decision", el);
        badge.dataset.decision = d;
        badge.textContent = d ? d.replace("_", " ") : "undecided";
      });
    }
    async function decide(decision) {
      const c = cands[S.sel];
      if (!c) return;
      const tags = $("#tags").value.split(",").map((t) => t.trim()).filter(Boolean);
      try {
        const out = await post("/api/decide", {
          query: R.query.id, candidate: c.id, decision: decision,
          confidence: $("#confidence").value, tags: tags, notes: $("#notes").value,
          explanation: S.data && S.data.candidate === c.id ? S.key : "",
        });
        paintDecisions(out.decisions);
        flash("saved: " + c.image_id + " " + decision.replace("_", " ") + " (event " + out.event + ")");
        $("#notes").value = "";
        select(decision === "match" ? S.sel : firstUndecided(S.sel + 1));
      } catch (err) { flash("not saved: " + err.message); }
    }
    async function undo() {
      try {
        const out = await post("/api/undo", { query: R.query.id });
        paintDecisions(out.decisions);
        if (!out.undone) { flash("nothing left to undo on this query"); return; }
        const i = cands.findIndex((c) => c.id === out.undone.candidate);
        flash("undone: " + out.undone.decision.replace("_", " ") + " (event " + out.undone.event + ")");
        if (i >= 0) select(i);
      } catch (err) { flash("undo failed: " + err.message); }
    }

    // ---- explanations ----
    const views = () => (amdView ? [S.layer, amdView] : [S.layer]);
    async function explain(all) {
      const ids = all ? [] : [cands[S.sel].id];
      try {
        // PAIR-X first, then AMD: the later request is the more urgent one, so the worker takes
        // the fast attribute job at its next candidate boundary and PAIR-X resumes after it
        for (const view of views()) {
          progress(await post("/api/explain", { query: R.query.id, layer: view, candidates: ids }));
        }
        poll();
      } catch (err) { flash("cannot explain: " + err.message); }
    }
    const status = (view) => fetch("/api/explain/" + R.query.id + "?layer=" + encodeURIComponent(view))
      .then((r) => (r.ok ? r.json() : null));
    function poll() {
      if (S.polling) return;
      S.polling = setInterval(async () => {
        const all = await Promise.all(views().map(status));
        all.forEach((st) => st && progress(st));
        if (all.every((st) => st && !st.open)) { clearInterval(S.polling); S.polling = null; }
      }, 300);
    }
    function progress(st) {
      if (st.layer !== S.layer && st.layer !== amdView) return;
      S.progress[st.layer] = st;
      if (st.layer === amdView) {
        A.results = st.results || {};
      } else {
        S.results = st.results || {};
      }
      $$(".cand").forEach((el) => {
        const done = [S.results[el.dataset.id] ? "explained" : "", A.results[el.dataset.id] ? "attributes" : ""];
        $(".expl-state", el).textContent = done.filter(Boolean).map((t) => "· " + t).join(" ");
      });
      const text = views().map((view) => {
        const p = S.progress[view], what = view === amdView ? "attributes " : "explaining ";
        if (!p) return "";
        if (p.open) {
          return what + p.done + "/" + p.total +
            (p.eta_s != null ? " · ETA " + Math.max(0, p.eta_s).toFixed(0) + " s" : " · waiting for the worker");
        }
        return p.error ? (view === amdView ? "AMD" : "explanation") + " failed: " + p.error : "";
      }).filter(Boolean).join(" · ");
      $("#explain-progress").textContent = text;
      const c = cands[S.sel];
      if (c && S.results[String(c.id)] && S.key !== S.results[String(c.id)]) show();
      if (c && A.results[String(c.id)] && A.key !== A.results[String(c.id)]) showAmd();
    }
    async function show() {
      const c = cands[S.sel];
      if (!c) return;
      const key = S.results[String(c.id)] || "";
      S.key = key;
      S.data = null;
      build(); // nothing of the previous candidate stays on screen while this one loads
      $("#figure-link").classList.toggle("hidden", !key);
      if (key) {
        $("#figure-link").href = "/expl/" + key + ".jpg";
        const resp = await fetch("/expl/" + key + ".json");
        if (resp.ok && S.key === key) { S.data = await resp.json(); S.data.candidate = c.id; }
      }
      setPhoto("a", R.query.id, S.data && S.data.a);
      setPhoto("b", c.id, S.data && S.data.b);
      facts(c);
      build();
      draw();
    }
    function setPhoto(side, id, d) {
      const p = panels[side], img = $(".photo", p);
      const src = "/img/" + id + "?side=1024";
      if (img.getAttribute("src") !== src) { img.src = src; img.onload = draw; }
      if (d) $(".heat", p).src = d.heatmap; else $(".heat", p).removeAttribute("src");
      p.dataset.h = d ? d.size[0] : "";
      p.dataset.w = d ? d.size[1] : "";
    }

    // ---- AMD: the distance split into attributes, each one's attention on demand ----
    async function showAmd() {
      if (!amdView) return;
      const c = cands[S.sel];
      if (!c) return;
      const key = A.results[String(c.id)] || "";
      A.key = key; A.data = null;
      attributes();
      if (key) {
        const resp = await fetch("/expl/" + key + ".json");
        if (resp.ok && A.key === key) A.data = await resp.json();
      }
      attributes();
      draw();
    }
    const yesNo = (v) => (v === null || v === undefined ? "?" : v ? "yes" : "no");
    function attributes() {
      const d = A.data, list = $("#attr-list"), link = $("#amd-figure-link");
      list.textContent = "";
      link.classList.toggle("hidden", !d);
      const more = $("#attr-more");
      more.classList.toggle("hidden", !d || d.attributes.length <= TOP_ATTRIBUTES);
      if (!d) {
        $("#attr-summary").textContent = A.key ? "loading…" : "no attribute explanation yet: press e (this candidate) or E (all)";
        return;
      }
      link.href = "/expl/" + A.key + ".jpg";
      const top = d.attributes.slice(0, 3).map((t) => t.name.replace(/_/g, " ")).join(", ");
      $("#attr-summary").textContent = (R.blind ? "" : "distance " + d.distance.toFixed(3) +
        " ≈ sum of attribute distances " + d.reconstructed.toFixed(3) + " · ") +
        "most of it: " + top + " · click one (or press a) for its attention";
      const widest = Math.max(...d.attributes.map((t) => t.contribution), 1e-9);
      more.textContent = A.all ? "top " + TOP_ATTRIBUTES + " only" : "all " + d.attributes.length + " attributes";
      d.attributes.forEach((t, k) => {
        if (!A.all && k >= TOP_ATTRIBUTES) return;
        const li = document.createElement("li"), name = document.createElement("span");
        const bar = document.createElement("span"), fill = document.createElement("span");
        const pct = document.createElement("span"), labels = document.createElement("span");
        li.dataset.k = String(k);
        li.classList.toggle("active", A.active === k);
        name.className = "name"; name.textContent = t.name.replace(/_/g, " "); name.title = t.name;
        bar.className = "bar"; fill.style.width = (100 * t.contribution / widest).toFixed(1) + "%"; bar.appendChild(fill);
        pct.className = "pct"; pct.textContent = (100 * t.contribution).toFixed(1) + "%";
        labels.className = "labels";
        const known = t.label_a !== null && t.label_b !== null;
        labels.classList.toggle("differ", known && t.label_a !== t.label_b);
        labels.textContent = "q " + yesNo(t.label_a) + " · c " + yesNo(t.label_b);
        li.title = t.name + ": " + (100 * t.contribution).toFixed(1) + "% of the attribute distances" +
          (R.blind ? "" : " (d_k " + t.distance.toFixed(3) + ")") + "; dataset labels where known: query (q) " + yesNo(t.label_a) + ", candidate (c) " + yesNo(t.label_b);
        li.append(name, bar, pct, labels);
        li.addEventListener("click", () => attend(A.active === k ? null : k));
        list.appendChild(li);
      });
      d.warnings.forEach((w) => { const li = document.createElement("li"); li.className = "warn"; li.textContent = w; list.appendChild(li); });
    }
    function attend(k) {
      A.active = k;
      if (k !== null && k >= TOP_ATTRIBUTES && !A.all) { A.all = true; attributes(); }
      $$("#attr-list li").forEach((li) => li.classList.toggle("active", li.dataset.k === String(k)));
      draw();
    }
    function nextAttribute() {
      if (!A.data) { flash("no attribute explanation for this candidate yet (e)"); return; }
      const n = A.data.attributes.length, k = A.active === null ? 0 : A.active + 1;
      attend(k < n ? k : null);
      flash(A.active === null ? "attention off" : "attention of " + A.data.attributes[A.active].name.replace(/_/g, " "));
    }
    function facts(c) {
      const q = R.query, d = S.data, el = $("#facts");
      el.textContent = "";
      const add = (cls, text) => {
        const div = document.createElement("div");
        div.className = cls; div.textContent = text; el.appendChild(div);
      };
      add("", "query " + q.image_id + " · " + (q.captured_at || "time unknown") + " · " + (q.location || "place unknown"));
      add("", "candidate " + c.image_id + " (individual " + c.identity + ") · " + (c.captured_at || "time unknown") + " · " + (c.location || "place unknown"));
      if (d) {
        if (!R.blind) add("context", "similarity " + d.similarity.toFixed(3) + (d.context ? " · " + d.context : ""));
        add("context", "layer " + d.layer + " · " + d.matches.length + " matches, the top " + Math.min(+$("#n-lines").value, d.matches.length) + " drawn · hover or click a number to see its pixel relevance");
        d.warnings.forEach((w) => add("warn", w));
      } else {
        add("context muted", "no explanation yet: press e (this candidate) or E (all)");
      }
    }

    // ---- the viewer: one affine map per panel, shared zoom and pan ----
    function matrix(side) {
      const p = panels[side], img = $(".photo", p);
      const h = +p.dataset.h || img.naturalHeight || 1, w = +p.dataset.w || img.naturalWidth || 1;
      const rot = side === "b" ? S.rot : 0, flip = side === "b" && S.flip;
      const W = p.clientWidth, H = p.clientHeight;
      const turned = rot % 180 !== 0;
      const k = Math.min(W / (turned ? h : w), H / (turned ? w : h)) * S.zoom;
      const t = (rot * Math.PI) / 180, cos = Math.cos(t), sin = Math.sin(t), fx = flip ? -1 : 1;
      // p -> T(W/2 + tx, H/2 + ty) . k R(t) F(fx) . (p - (w/2, h/2))
      const a = k * cos * fx, b = k * sin * fx, c = -k * sin, d = k * cos;
      const e = W / 2 + S.tx - (a * w) / 2 - (c * h) / 2, f = H / 2 + S.ty - (b * w) / 2 - (d * h) / 2;
      return { a, b, c, d, e, f, w, h, W, H };
    }
    const apply = (m, x, y) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f];
    function build() {
      // one marker per match and side, one line per match: created once per explanation,
      // moved and restyled by draw() (hovering must not replace the element under the mouse)
      const d = S.data, svg = $("#lines");
      svg.textContent = "";
      S.els = { a: [], b: [], lines: [] };
      for (const side of ["a", "b"]) {
        const marks = $(".marks", panels[side]);
        marks.textContent = "";
        (d ? d.matches : []).forEach((mt, i) => {
          const el = document.createElement("div");
          el.className = "mark"; el.style.background = mt.colour;
          el.textContent = String(i + 1); el.dataset.k = String(i);
          el.title = "match " + (i + 1) + (mt.traced ? " (traced to pixels)" : "") + " · relevance " + mt.relevance.toPrecision(3);
          marks.appendChild(el); S.els[side].push(el);
        });
      }
      (d ? d.matches : []).forEach((mt, i) => {
        const ln = document.createElementNS("http://www.w3.org/2000/svg", "line");
        ln.setAttribute("stroke", mt.colour);
        ln.setAttribute("stroke-width", String(1 + 3 * mt.weight));
        ln.dataset.k = String(i);
        svg.appendChild(ln); S.els.lines.push(ln);
      });
    }
    function draw() {
      const d = S.data, n = d ? Math.min(+$("#n-lines").value, d.matches.length) : 0;
      $("#n-lines-out").textContent = $("#n-lines").value;
      const ends = {};
      for (const side of ["a", "b"]) {
        const p = panels[side], m = matrix(side), stage = $(".stage", p);
        stage.style.width = m.w + "px"; stage.style.height = m.h + "px";
        stage.style.transform = "matrix(" + [m.a, m.b, m.c, m.d, m.e, m.f].join(",") + ")";
        $(".photo", p).style.filter = "brightness(" + $("#brightness").value + "%) contrast(" + $("#contrast").value + "%)";
        const attn = $(".attn", p), att = S.active === null && A.data && A.active !== null &&
          A.data.attributes[A.active]["map_" + side];
        attn.classList.toggle("hidden", !att);
        if (att && attn.getAttribute("src") !== att) attn.src = att;
        $(".heat", p).classList.toggle("hidden", !(d && $("#heatmap").checked && S.active === null && !att));
        const mask = $(".mask", p), traced = d && S.active !== null && d[side].pixels[S.active];
        mask.classList.toggle("hidden", !traced);
        if (traced && mask.getAttribute("src") !== traced) mask.src = traced;
        ends[side] = [];
        (S.els ? S.els[side] : []).forEach((el, i) => {
          const mt = d.matches[i], [x, y] = apply(m, mt[side][0], mt[side][1]);
          const inside = i < n && x >= 0 && y >= 0 && x <= m.W && y <= m.H;
          ends[side].push(inside ? [x + p.offsetLeft, y + p.offsetTop] : null);
          el.classList.toggle("hidden", !inside);
          el.classList.toggle("dim", S.active !== null && S.active !== i);
          el.classList.toggle("active", S.active === i);
          el.style.left = x + "px"; el.style.top = y + "px";
        });
      }
      (S.els ? S.els.lines : []).forEach((ln, i) => {
        const pa = ends.a[i], pb = ends.b[i];
        ln.classList.toggle("hidden", !pa || !pb);
        if (!pa || !pb) return;
        ln.setAttribute("x1", pa[0]); ln.setAttribute("y1", pa[1]);
        ln.setAttribute("x2", pb[0]); ln.setAttribute("y2", pb[1]);
        ln.classList.toggle("dim", S.active !== null && S.active !== i);
      });
    }
    function activate(k, pin) {
      if (S.pinned && !pin) return;
      S.active = k; S.pinned = pin && k !== null;
      draw();
    }
    const viewer = $("#viewer");
    viewer.addEventListener("mouseover", (ev) => {
      const k = ev.target.dataset && ev.target.dataset.k;
      if (k !== undefined) activate(+k, false);
    });
    viewer.addEventListener("mouseout", (ev) => {
      if (ev.target.dataset && ev.target.dataset.k !== undefined) activate(null, false);
    });
    viewer.addEventListener("click", (ev) => {
      const k = ev.target.dataset && ev.target.dataset.k;
      if (k !== undefined) { S.pinned = false; activate(S.active === +k && S.pinned ? null : +k, true); }
    });
    let drag = null;
    Object.values(panels).forEach((p) => {
      p.addEventListener("wheel", (ev) => {
        ev.preventDefault();
        const r = p.getBoundingClientRect(), cx = ev.clientX - r.left - p.clientWidth / 2, cy = ev.clientY - r.top - p.clientHeight / 2;
        const f = Math.exp(-ev.deltaY * 0.0015), z = Math.max(0.5, Math.min(12, S.zoom * f)), g = z / S.zoom;
        S.tx = cx - g * (cx - S.tx); S.ty = cy - g * (cy - S.ty); S.zoom = z;
        draw();
      }, { passive: false });
      p.addEventListener("pointerdown", (ev) => {
        if (ev.target.dataset.k !== undefined) return;
        drag = { x: ev.clientX, y: ev.clientY, tx: S.tx, ty: S.ty };
        p.classList.add("dragging"); p.setPointerCapture(ev.pointerId);
      });
      p.addEventListener("pointermove", (ev) => {
        if (!drag) return;
        S.tx = drag.tx + ev.clientX - drag.x; S.ty = drag.ty + ev.clientY - drag.y; draw();
      });
      p.addEventListener("pointerup", () => { drag = null; p.classList.remove("dragging"); });
    });
    const zoomBy = (f) => { S.zoom = Math.max(0.5, Math.min(12, S.zoom * f)); S.tx *= f; S.ty *= f; draw(); };
    const reset = () => { S.zoom = 1; S.tx = 0; S.ty = 0; draw(); };
    const rotate = () => { S.rot = (S.rot + 90) % 360; draw(); };
    const flip = () => { S.flip = !S.flip; draw(); };
    const lines = (delta) => { const el = $("#n-lines"); el.value = String(Math.max(0, Math.min(60, +el.value + delta))); draw(); };
    ["n-lines", "brightness", "contrast", "heatmap"].forEach((id) => $("#" + id).addEventListener("input", draw));
    $("#layer").addEventListener("change", () => {
      S.layer = $("#layer").value; S.results = {};
      fetch("/api/explain/" + R.query.id + "?layer=" + encodeURIComponent(S.layer)).then((r) => r.json()).then((st) => { progress(st); show(); if (st.open) poll(); });
    });
    $("#rotate").addEventListener("click", rotate);
    $("#flip").addEventListener("click", flip);
    $("#zoom-reset").addEventListener("click", reset);
    $("#explain-one").addEventListener("click", () => explain(false));
    $("#explain-all").addEventListener("click", () => explain(true));
    $("#undo").addEventListener("click", undo);
    if (amdView) $("#attr-more").addEventListener("click", () => { A.all = !A.all; attributes(); });
    $$("button.d").forEach((b) => b.addEventListener("click", () => decide(b.dataset.decision)));
    $$(".cand").forEach((el) => el.addEventListener("click", () => select(+el.dataset.index)));
    window.addEventListener("resize", draw);

    document.addEventListener("keydown", (ev) => {
      if (typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      const keys = {
        "1": () => decide("match"), "2": () => decide("no_match"), "3": () => decide("unsure"),
        z: undo, ArrowDown: () => select(S.sel + 1), j: () => select(S.sel + 1),
        ArrowUp: () => select(S.sel - 1), k: () => select(S.sel - 1),
        ArrowRight: () => { const a = $("#next"); if (a) location.href = a.href; },
        ArrowLeft: () => { const a = $("#prev"); if (a) location.href = a.href; },
        e: () => explain(false), E: () => explain(true),
        h: () => { $("#heatmap").checked = !$("#heatmap").checked; draw(); },
        a: () => { if (amdView) nextAttribute(); },
        "+": () => zoomBy(1.25), "=": () => zoomBy(1.25), "-": () => zoomBy(0.8), "0": reset,
        r: rotate, f: flip, "[": () => lines(-5), "]": () => lines(5),
      };
      if (keys[ev.key]) { ev.preventDefault(); keys[ev.key](); }
    });

    Promise.all(views().map(status)).then((all) => {
      all.forEach((st) => st && progress(st));
      if (all.some((st) => st && st.open)) poll();
      select(S.sel);
    });
  }
})();
