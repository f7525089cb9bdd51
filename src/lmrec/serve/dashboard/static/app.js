// The lmrec dashboard: plain JavaScript, no dependencies, no network access beyond this server.
// Every string from the API reaches the DOM as a text node (el() below), never as HTML, so
// item titles and ids cannot inject markup; no inline handlers, so a strict CSP holds.
"use strict";

(() => {
  const ROOT = document.querySelector('meta[name="lmrec-root"]').content;
  const KEY_STORE = "lmrec.readKey";
  const query = new URLSearchParams(location.search);
  // ?poll=MS shortens the live refresh (demos, tests); a few seconds by default
  const POLL_MS = Math.min(60000, Math.max(250, Number(query.get("poll")) || 3000));
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  // --- DOM helpers ------------------------------------------------------------------------
  function append(node, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) throw new Error("no inline handlers"); // CSP would block them
      if (k === "class") node.setAttribute("class", v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    return node;
  }

  const el = (tag, attrs, ...children) =>
    append(setAttrs(document.createElement(tag), attrs), children);
  const svg = (tag, attrs, ...children) =>
    append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);

  function fill(id, ...children) {
    const node = $(id);
    node.replaceChildren();
    return append(node, children);
  }

  function setStatus(id, text, kind) {
    const node = $(id);
    node.textContent = text || "";
    node.className = "status" + (kind ? " " + kind : "");
  }

  // --- formatting --------------------------------------------------------------------------
  const isNum = (x) => typeof x === "number" && Number.isFinite(x);
  const num = (x, d = 4) => (isNum(x) ? (Number.isInteger(x) ? String(x) : x.toFixed(d)) : "—");
  const pct = (x) => (isNum(x) ? (100 * x).toFixed(2) + "%" : "—");
  const pctTick = (x) => (isNum(x) ? +(100 * x).toFixed(4) + "%" : "—");
  const tick = (x) => (isNum(x) ? String(+x.toPrecision(6)) : "—");
  const ci = (pair, f = pct) =>
    Array.isArray(pair) && pair.length === 2 ? `[${f(pair[0])}, ${f(pair[1])}]` : "—";
  const pval = (p) => (isNum(p) ? (p < 0.001 ? "< 0.001" : p.toFixed(3)) : "—");
  const pad = (n) => String(n).padStart(2, "0");

  function when(ts) {
    if (!isNum(ts) || ts <= 0) return "—";
    const d = new Date(ts * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function value(v) {
    if (v === null || v === undefined) return "—";
    if (Array.isArray(v)) return v.map(value).join(", ");
    if (typeof v === "object") return JSON.stringify(v);
    if (typeof v === "number") return tick(v);
    return String(v);
  }

  // --- the API -----------------------------------------------------------------------------
  class AuthNeeded extends Error {}
  class HttpError extends Error {
    constructor(status, detail) {
      super(status ? `HTTP ${status}: ${detail}` : detail);
      this.status = status;
    }
  }

  function detailOf(body) {
    if (!body || body.detail === undefined) return "";
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) {
      return body.detail.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
    }
    return JSON.stringify(body.detail);
  }

  async function api(path, { text = false } = {}) {
    const key = sessionStorage.getItem(KEY_STORE);
    const headers = { Accept: text ? "text/plain" : "application/json" };
    if (key) headers.Authorization = "Bearer " + key;
    let resp;
    try {
      resp = await fetch(ROOT + path, { headers, cache: "no-store" });
    } catch (err) {
      throw new HttpError(0, "the server does not answer");
    }
    if (resp.status === 401) {
      showAuth(key ? "That key was not accepted." : "");
      throw new AuthNeeded("a read key is needed");
    }
    if (!resp.ok) {
      let detail = resp.statusText;
      try { detail = detailOf(await resp.json()) || detail; } catch (err) { /* not JSON */ }
      throw new HttpError(resp.status, detail);
    }
    return text ? resp.text() : resp.json();
  }

  const enc = encodeURIComponent;

  // titles of items, from the bundle's item table, cached for the page's life
  const titles = new Map();
  async function lookup(ids) {
    const missing = [...new Set(ids.filter((i) => i !== null && i !== undefined).map(String))]
      .filter((i) => !titles.has(i));
    for (let s = 0; s < missing.length; s += 200) {
      const part = missing.slice(s, s + 200);
      const got = await api("/v1/model/items?" + part.map((i) => "id=" + enc(i)).join("&"));
      for (const row of got.items) titles.set(String(row.item), row.title ?? null);
      for (const i of part) if (!titles.has(i)) titles.set(i, null);
    }
  }
  const titleOf = (id) => titles.get(String(id)) ?? null;

  function itemLink(id, title) {
    const t = title === undefined ? titleOf(id) : title;
    const b = el("button", { type: "button", class: "item-link", "data-item": String(id) },
      t ? el("span", { class: "title" }, t) : null, el("span", { class: "id" }, String(id)));
    b.addEventListener("click", () => openItem(String(id)));
    return b;
  }

  const table = (head, rows, cls) =>
    el("table", { class: cls || "" },
      el("thead", null, el("tr", null, head.map((h) => el("th", null, h)))),
      el("tbody", null, rows.map((r) => el("tr", null, r.map((c) => el("td", null, c))))));

  const kvTable = (pairs) =>
    el("table", { class: "kv" }, el("tbody", null,
      pairs.map(([k, v]) => el("tr", null, el("th", null, k), el("td", null, v)))));

  const empty = (text) => el("p", { class: "muted" }, text);

  // --- auth ---------------------------------------------------------------------------------
  function showAuth(message) {
    $("auth").hidden = false;
    $("panels").hidden = true;
    $("auth-message").textContent = message || "";
    $("forget-key").hidden = !sessionStorage.getItem(KEY_STORE);
    stopPolling();
    $("auth-key").focus();
  }

  $("auth-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("auth-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    $("auth-key").value = "";
    $("auth").hidden = true;
    $("panels").hidden = false;
    start();
  });

  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    $("forget-key").hidden = true;
    start();
  });

  // errors of a panel's loader: the key prompt is already up for AuthNeeded
  function failed(statusId, err) {
    if (err instanceof AuthNeeded) return;
    setStatus(statusId, err instanceof HttpError ? err.message : String(err), "error");
    if (!(err instanceof HttpError)) console.warn(err);
  }

  // --- panels and navigation --------------------------------------------------------------------
  const loaders = {
    user: () => { if (userState.id) startPolling(); },
    item: () => {},
    experiments: () => loadExperiments(),
    model: () => loadModel(),
    health: () => loadHealth(),
  };
  let current = null;

  function show(panel) {
    if (!(panel in loaders)) panel = "user";
    current = panel;
    for (const name of Object.keys(loaders)) $("panel-" + name).hidden = name !== panel;
    for (const b of document.querySelectorAll("#tabs button")) {
      b.classList.toggle("active", b.dataset.panel === panel);
    }
    if (panel !== "user") stopPolling();
    loaders[panel]();
  }

  for (const b of document.querySelectorAll("#tabs button")) {
    b.addEventListener("click", () => {
      const id = b.dataset.panel === "user" ? userState.id : b.dataset.panel === "item" ? itemId : null;
      history.replaceState(null, "", "#" + b.dataset.panel + (id ? "/" + enc(id) : ""));
      show(b.dataset.panel);
    });
  }

  function route() {
    const [panel, id] = location.hash.slice(1).split("/");
    if (panel === "user" && id) { $("user-id").value = decodeURIComponent(id); show("user"); loadUser(decodeURIComponent(id)); return; }
    if (panel === "item" && id) { openItem(decodeURIComponent(id)); return; }
    show(panel || "user");
  }
  window.addEventListener("hashchange", route);

  async function start() {
    $("auth").hidden = true;
    $("panels").hidden = false;
    $("forget-key").hidden = !sessionStorage.getItem(KEY_STORE);
    try {
      const m = await api("/v1/model");
      $("model-badge").textContent = `${m.model} · ${m.model_version}`;
    } catch (err) {
      if (err instanceof AuthNeeded) return;
      $("model-badge").textContent = "model: " + err.message;
    }
    route();
  }

  // --- users ----------------------------------------------------------------------------------
  let userState = { id: null, lastSeq: null, timer: null, busy: false };

  $("user-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("user-id").value.trim();
    if (!id) return;
    history.replaceState(null, "", "#user/" + enc(id));
    loadUser(id);
  });

  function stopPolling() {
    if (userState.timer) clearInterval(userState.timer);
    userState.timer = null;
    $("live-dot").classList.remove("on");
  }

  function startPolling() {
    stopPolling();
    userState.timer = setInterval(pollUser, POLL_MS);
    $("live-dot").classList.add("on");
  }

  async function loadUser(id) {
    stopPolling();
    userState = { id, lastSeq: null, timer: null, busy: false };
    setStatus("user-status", "Loading " + id + " …");
    try {
      const [hist, recs] = await Promise.all([
        api(`/v1/users/${enc(id)}/history?limit=50`), loadRecs(id)]);
      if (userState.id !== id) return; // another user was asked for meanwhile
      await lookup(hist.training.events.map((e) => e.item));
      await renderHistory(hist, null);
      renderRecs(recs);
      const facts = [hist.known ? "in the training data" : "not in the training data",
        `${hist.training.total} training events`, "model " + recs.model_version];
      if (recs.arm) facts.push("arm " + recs.arm);
      if (recs.note) facts.push(recs.note);
      setStatus("user-status", `User ${hist.user}: ${facts.join(" · ")}`);
      if (current === "user") startPolling();
    } catch (err) {
      failed("user-status", err);
    }
  }

  async function loadRecs(id) {
    // log=false: looking at a user is no impression shown to them (it would dilute the
    // experiments' CTR); a server that does not know the parameter ignores it
    const recs = await api(`/v1/users/${enc(id)}/recommendations?k=10&explain=true&log=false`);
    await lookup(recs.items.flatMap((r) => [r.item, r.because]));
    return recs;
  }

  async function pollUser() {
    const id = userState.id;
    if (!id || userState.busy || document.hidden) return;
    userState.busy = true;
    try {
      const hist = await api(`/v1/users/${enc(id)}/history?limit=50`);
      if (userState.id !== id) return;
      if (maxSeq(hist.live.events) !== userState.lastSeq) {
        // new events change the next recommendation: show it
        const recs = await loadRecs(id);
        if (userState.id !== id) return;
        await renderHistory(hist, userState.lastSeq);
        renderRecs(recs);
      }
    } catch (err) {
      if (err instanceof AuthNeeded) stopPolling();
      else failed("user-status", err);
    } finally {
      userState.busy = false;
    }
  }

  function renderRecs(recs) {
    if (!recs.items.length) { fill("user-recs", empty(recs.note || "no recommendation")); return; }
    const rows = recs.items.map((r, n) => [
      String(n + 1), itemLink(r.item), num(r.score),
      r.reason ? r.reason : r.because !== null && r.because !== undefined
        ? el("span", null, "because of ", itemLink(r.because)) : el("span", { class: "muted" }, "—")]);
    fill("user-recs", table(["#", "item", "score", "why"], rows, "recs"));
  }

  // events arrive in any time order (late events, client clocks): `seq` tells what is new
  const maxSeq = (events) => (events.length ? Math.max(...events.map((e) => e.seq)) : null);

  async function renderHistory(hist, previousSeq) {
    await lookup(hist.live.events.map((e) => e.item));
    const live = hist.live.events.slice().reverse(); // newest first
    userState.lastSeq = maxSeq(hist.live.events);
    fill("user-live", live.length
      ? el("ol", { class: "events" }, live.map((e) => el("li", {
        class: previousSeq !== null && e.seq > previousSeq ? "new" : "",
        "data-seq": String(e.seq) },
      el("span", { class: "when" }, when(e.timestamp)), el("span", { class: "type" }, e.type),
      itemLink(e.item, e.title), e.known_item ? null : el("span", { class: "warn" }, "unknown item"))))
      : empty("no live events yet"));
    const training = hist.training.events.slice().reverse();
    fill("user-training", training.length
      ? [el("ol", { class: "events" }, training.map((e) => el("li", null,
        el("span", { class: "when" }, when(e.timestamp)),
        el("span", { class: "type" }, e.type || "event"), itemLink(e.item, e.title)))),
      hist.training.more ? empty(`latest ${training.length} of ${hist.training.total}`) : null]
      : empty(hist.known ? "no training events" : "not a training user"));
  }

  // --- items ----------------------------------------------------------------------------------
  let itemId = null;

  $("item-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("item-id").value.trim();
    if (id) openItem(id);
  });

  async function openItem(id) {
    itemId = id;
    $("item-id").value = id;
    history.replaceState(null, "", "#item/" + enc(id));
    show("item");
    setStatus("item-status", "Loading " + id + " …");
    fill("item-attrs");
    fill("item-similar");
    try {
      let attrs = null;
      let source = "the catalogue";
      try {
        attrs = await api(`/v1/items/${enc(id)}`);
      } catch (err) {
        if (!(err instanceof HttpError && err.status === 404)) throw err;
      }
      if (attrs === null) { // no catalogue route (or an unknown item): the bundle's table
        const row = (await api("/v1/model/items?id=" + enc(id))).items[0];
        if (!row.known) { setStatus("item-status", `Unknown item ${id}`, "error"); return; }
        attrs = row;
        source = "the served bundle's item table";
      }
      renderAttrs(attrs);
      setStatus("item-status", `Item ${id} (attributes from ${source})`);
      let sim;
      try {
        sim = await api(`/v1/items/${enc(id)}/similar?k=10`);
      } catch (err) { // e.g. a hidden item, or one the served model was not trained on
        if (!(err instanceof HttpError && err.status === 404)) throw err;
        fill("item-similar", empty("No similar items: " + err.message));
        return;
      }
      await lookup(sim.items.map((s) => s.item));
      fill("item-similar", sim.items.length
        ? table(["#", "item", "score"], sim.items.map((s, n) => [String(n + 1), itemLink(s.item), num(s.score)]))
        : empty("no similar item"));
      if (itemId === id) setStatus("item-status", `Item ${id} (attributes from ${source}) · model ${sim.model_version}`);
    } catch (err) {
      failed("item-status", err);
    }
  }

  function renderAttrs(doc) {
    const pairs = [];
    const nested = doc.attributes && typeof doc.attributes === "object" ? doc.attributes : {};
    for (const [k, v] of Object.entries(doc)) {
      if (k === "known" || (k !== "attributes" && k in nested)) continue; // shown once
      if (k === "attributes" && v && typeof v === "object" && !Array.isArray(v)) {
        for (const [a, x] of Object.entries(v)) pairs.push([a, value(x)]);
      } else pairs.push([k, k.endsWith("_at") && isNum(v) ? when(v) : value(v)]);
    }
    fill("item-attrs", kvTable(pairs));
  }

  // --- charts (inline SVG) ---------------------------------------------------------------
  // 1, 2 or 5 times a power of ten, the smallest at least `raw`
  function niceStep(raw) {
    const p = 10 ** Math.floor(Math.log10(raw));
    return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw * 0.999);
  }

  // series: [{name, color, points: [{x, y, lo, hi}]}]; bands drawn where lo/hi are given
  function lineChart(series, { xFmt = tick, yFmt = tick, title = "", height = 220 } = {}) {
    const W = 640, H = height, L = 56, R = 12, T = 12, B = 28;
    const pts = series.flatMap((s) => s.points);
    if (!pts.length) return empty("nothing to plot yet");
    const xs = pts.map((p) => p.x);
    const ys = pts.flatMap((p) => [p.y, p.lo, p.hi]).filter(isNum);
    let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    let [y0, y1] = [Math.min(0, ...ys), Math.max(...ys)];
    if (y0 === y1) y1 = y0 + 1;
    const yStep = niceStep((y1 - y0) / 4); // ticks at round numbers
    y0 = Math.floor(y0 / yStep) * yStep;
    y1 = Math.ceil(y1 / yStep - 1e-9) * yStep;
    const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const Y = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" },
      svg("title", null, title));
    for (let y = y0; y <= y1 + yStep / 2; y += yStep) {
      chart.append(svg("line", { x1: L, x2: W - R, y1: Y(y), y2: Y(y), class: "grid" }),
        svg("text", { x: L - 6, y: Y(y) + 4, "text-anchor": "end", class: "tick" }, yFmt(y)));
    }
    const xt = [...new Set(xs)].sort((a, b) => a - b);
    const step = Math.max(1, Math.ceil(xt.length / 6));
    xt.filter((_, i) => i % step === 0).forEach((x) => chart.append(
      svg("text", { x: X(x), y: H - 8, "text-anchor": "middle", class: "tick" }, xFmt(x))));
    chart.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
    for (const s of series) {
      const p = s.points.slice().sort((a, b) => a.x - b.x);
      const band = p.filter((q) => isNum(q.lo) && isNum(q.hi));
      if (band.length > 1) {
        const up = band.map((q) => `${X(q.x)},${Y(q.hi)}`);
        const down = band.slice().reverse().map((q) => `${X(q.x)},${Y(q.lo)}`);
        chart.append(svg("polygon", { points: up.concat(down).join(" "), fill: s.color,
          "fill-opacity": 0.15, class: "band", "data-series": s.name }));
      }
      for (const q of band) {
        chart.append(svg("line", { x1: X(q.x), x2: X(q.x), y1: Y(q.lo), y2: Y(q.hi),
          stroke: s.color, "stroke-opacity": 0.5, class: "errbar" }));
      }
      const line = p.filter((q) => isNum(q.y));
      chart.append(svg("polyline", { points: line.map((q) => `${X(q.x)},${Y(q.y)}`).join(" "),
        fill: "none", stroke: s.color, "stroke-width": 2, class: "series", "data-series": s.name }));
      for (const q of line) chart.append(svg("circle", { cx: X(q.x), cy: Y(q.y), r: 3, fill: s.color }));
    }
    const legend = el("div", { class: "legend" }, series.map((s) =>
      el("span", null, svg("svg", { viewBox: "0 0 10 10", class: "swatch" },
        svg("rect", { width: 10, height: 10, fill: s.color })), s.name)));
    return el("figure", { class: "figure" }, chart, legend);
  }

  // a bucket start as a clock time, with the day when the buckets span more than one
  const clockFor = (starts) => (t) => {
    const d = new Date(t * 1000);
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    const days = starts.length ? (Math.max(...starts) - Math.min(...starts)) / 86400 : 0;
    return days >= 1 ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}` : hm;
  };

  // --- experiments ----------------------------------------------------------------------------
  async function loadExperiments() {
    setStatus("exp-status", "Loading …");
    let data;
    try {
      data = await api("/v1/experiments");
    } catch (err) {
      fill("exp-body");
      if (err instanceof HttpError && err.status === 404) {
        setStatus("exp-status", "No experiment data: this server has no GET /v1/experiments " +
          "(it answered 404). Serve two arms (lmrec serve --arm A=… --arm B=…) to run one.", "info");
        return;
      }
      failed("exp-status", err);
      return;
    }
    const arms = data.arms || [];
    const color = new Map(arms.map((a, n) => [a.arm, PALETTE[n % PALETTE.length]]));
    const armRows = arms.map((a) => [
      el("span", { class: "arm" }, svg("svg", { viewBox: "0 0 10 10", class: "swatch" },
        svg("rect", { width: 10, height: 10, fill: color.get(a.arm) })), a.arm),
      a.model_version, pct(a.share), num(a.impressions), num(a.clicks), pct(a.ctr), ci(a.ctr_ci),
      num(a.conversions), pct(a.conversion_rate), ci(a.conversion_ci)]);
    const parts = [el("div", { class: "card" }, el("h2", null, "Arms"),
      arms.length ? table(["arm", "model version", "share", "impressions", "clicks", "CTR",
        "CTR 95% CI", "conversions", "conv. rate", "conv. 95% CI"], armRows, "arms")
        : empty("no arm"))];
    const side = [];
    const c = data.comparison;
    if (c) {
      side.push(el("div", { class: "card", id: "exp-comparison" },
        el("h2", null, `${c.treatment} vs ${c.control}`,
          el("span", { class: "badge " + (c.significant ? "good" : "") },
            c.significant ? "significant at 5%" : "not significant")),
        kvTable([["CTR difference", `${pct(c.ctr_diff)} ${ci(c.ctr_diff_ci)}`],
          ["relative", pct(c.ctr_relative)], ["p-value", pval(c.p_value)],
          ["conversion difference", `${pct(c.conversion_diff)} ${ci(c.conversion_diff_ci)}`],
          ["conversion p-value", pval(c.conversion_p_value)]])));
    }
    const il = data.interleaving;
    if (il) {
      const [a, b] = il.arms;
      side.push(el("div", { class: "card", id: "exp-interleaving" },
        el("h2", null, `Interleaving ${a} vs ${b}`),
        kvTable([["impressions", num(il.impressions)],
          ["wins", `${a} ${num(il.wins?.[a])} · ${b} ${num(il.wins?.[b])} · ties ${num(il.ties)}`],
          ["preference", `${num(il.preference, 3)} ${ci(il.preference_ci, (x) => num(x, 3))}` +
            ` (> 0 favours ${a})`],
          ["p-value", pval(il.p_value)], ["winner", il.winner ?? "none yet"]])));
    }
    if (side.length) parts.push(el("div", { class: "grid two gap-below" }, side));
    const series = arms.map((a) => ({ name: a.arm, color: color.get(a.arm),
      points: (data.timeline || []).filter((p) => p.arm === a.arm).map((p) => ({
        x: p.start, y: p.ctr, lo: p.ctr_ci?.[0], hi: p.ctr_ci?.[1] })) }));
    parts.push(el("div", { class: "card", id: "exp-timeline" },
      el("h2", null, "CTR over time ", el("span", { class: "muted" }, "with 95% intervals")),
      lineChart(series, { xFmt: clockFor((data.timeline || []).map((p) => p.start)), yFmt: pctTick, title: "CTR per arm over time" })));
    fill("exp-body", parts);
    setStatus("exp-status", `Mode: ${data.mode} · ${arms.length} arm${arms.length === 1 ? "" : "s"}`);
  }

  // --- the model --------------------------------------------------------------------------------
  function flatten(obj, prefix = "", out = []) {
    for (const [k, v] of Object.entries(obj || {})) {
      if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, prefix + k + ".", out);
      else out.push([prefix + k, value(v)]);
    }
    return out;
  }

  async function loadModel() {
    setStatus("model-status", "Loading …");
    let m;
    try { m = await api("/v1/model"); } catch (err) { failed("model-status", err); return; }
    const parts = [el("div", { class: "grid two" },
      el("div", { class: "card", id: "model-summary" }, el("h2", null, "Bundle"), kvTable([
        ["model", m.model], ["version", m.model_version], ["lmrec", value(m.lmrec_version)],
        ["trained", when(m.created_at)], ["loaded", when(m.loaded_at)],
        ["users · items · events", `${num(m.n_users)} · ${num(m.n_items)} · ${num(m.n_events)}`],
        ["retrieval", m.index ? "ANN index (" + m.index + ")" : m.embedding_scorer ? "exact (embeddings)" : "exact"],
        ["behaviour types", value(m.event_types)], ["item attributes", Object.entries(m.item_roles || {}).map(([c, r]) => `${c} (${r})`).join(", ") || "none"],
        ["users forgotten since training", num(m.redacted_users)],
        ["experiment arms", Array.isArray(m.arms) ? m.arms.map((a) =>
          `${a.arm}: ${a.model} ${a.model_version} (${pct(a.share)})`).join(" · ") : "none"]])),
      el("div", { class: "card", id: "model-config" }, el("h2", null, "Config"),
        kvTable(flatten(m.config)),
        Object.keys(m.settings || {}).length
          ? [el("h3", null, "Chosen from the data"), kvTable(flatten(m.settings))] : null))];
    const t = m.training;
    const curve = el("div", { class: "card", id: "model-training" }, el("h2", null, "Training curve"));
    if (t && Array.isArray(t.history) && t.history.length) {
      const pts = (key) => t.history.filter((r) => isNum(r[key])).map((r) => ({ x: r.epoch, y: r[key] }));
      curve.append(lineChart([{ name: "training loss", color: PALETTE[0], points: pts("loss") }],
        { title: "training loss per epoch", height: 180 }));
      if (pts("metric").length) {
        curve.append(lineChart([{ name: "validation metric", color: PALETTE[2], points: pts("metric") }],
          { title: "validation metric per epoch", height: 180 }));
      }
      curve.append(kvTable([["best epoch", num(t.best_epoch)], ["best metric", num(t.best_metric)],
        ["stopped early", value(t.stopped_early)]]));
    } else curve.append(empty("No training curve: the bundle holds no history.json (a closed-form model, or trained without a run folder)."));
    const a = m.auto;
    const auto = el("div", { class: "card", id: "model-auto" }, el("h2", null, "Model search (auto)"));
    if (a && a.winner) {
      auto.append(kvTable(flatten(a.winner).concat([["metric", value(a.metric)], ["stopped", value(a.stop)],
        ["trials", value(a.counts)]])));
      if (Array.isArray(a.curve) && a.curve.length) {
        auto.append(lineChart([{ name: "best so far", color: PALETTE[3],
          points: a.curve.map((p) => ({ x: p.at_s, y: p.best })) }],
        { title: "best validation value over search time (s)", height: 160 }));
      }
      const trials = (a.trials || []).slice().sort((p, q) => (q.value ?? -Infinity) - (p.value ?? -Infinity)).slice(0, 12);
      if (trials.length) {
        auto.append(table(["#", "family", "state", "value", "seconds", "params"], trials.map((r) =>
          [num(r.number), value(r.family), value(r.state), num(r.value), num(r.seconds, 2), value(r.params)])));
      }
    } else auto.append(empty("No search: the model was not chosen by --model auto (no auto.json in the bundle)."));
    const metrics = el("div", { class: "card", id: "model-metrics" }, el("h2", null, "Offline metrics"),
      m.offline_metrics && Object.keys(m.offline_metrics).length
        ? kvTable(flatten(m.offline_metrics)) : empty("None recorded with the bundle."));
    parts.push(el("div", { class: "grid two" }, curve, auto), metrics);
    fill("model-body", parts);
    setStatus("model-status", `${m.model} · ${m.model_version}`);
  }

  // --- health ---------------------------------------------------------------------------------
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const m = line.match(/^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
      if (!m) continue;
      const labels = {};
      for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
      out.push({ name: m[1], labels, value: Number(m[3]) });
    }
    return out;
  }

  const total = (samples, name, pred = () => true) =>
    samples.filter((s) => s.name === name && pred(s.labels)).reduce((a, s) => a + s.value, 0);

  // a quantile of a Prometheus histogram (buckets summed over the series `pred` picks)
  function quantile(samples, name, q, pred) {
    const cum = new Map();
    for (const s of samples) {
      if (s.name !== name + "_bucket" || !pred(s.labels)) continue;
      const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
      cum.set(le, (cum.get(le) || 0) + s.value);
    }
    const bounds = [...cum.keys()].sort((a, b) => a - b);
    const n = cum.get(Infinity) || 0;
    if (!n) return null;
    let prevLe = 0, prevC = 0;
    for (const le of bounds) {
      const c = cum.get(le);
      if (c >= q * n) {
        if (le === Infinity) return prevLe;
        return prevLe + (le - prevLe) * ((q * n - prevC) / Math.max(c - prevC, 1e-12));
      }
      prevLe = le; prevC = c;
    }
    return null;
  }

  async function loadHealth() {
    setStatus("health-status", "Loading …");
    const [health, ready, metrics] = await Promise.allSettled([
      api("/v1/health"), api("/v1/ready"), api("/v1/metrics", { text: true })]);
    if ([health, ready, metrics].some((r) => r.status === "rejected" && r.reason instanceof AuthNeeded)) return;
    const badge = (ok, text) => el("span", { class: "badge " + (ok ? "good" : "bad") }, text);
    const state = (r) => r.status === "fulfilled"
      ? badge(true, r.value.status) : badge(false, r.reason.message);
    const cards = [el("div", { class: "card", id: "health-status-card" }, el("h2", null, "Status"), kvTable([
      ["liveness (/v1/health)", state(health)], ["readiness (/v1/ready)", state(ready)],
      ["model version", health.status === "fulfilled" ? value(health.value.model_version) : "—"]]))];
    if (metrics.status === "fulfilled") {
      const s = parseMetrics(metrics.value);
      const req = "lmrec_http_requests_total";
      const recRoute = (l) => (l.route || "").includes("recommendations");
      const dur = "lmrec_http_request_duration_seconds";
      const recCount = total(s, dur + "_count", recRoute);
      const ms = (x) => (isNum(x) ? (1000 * x).toFixed(1) + " ms" : "—");
      const loaded = total(s, "lmrec_model_loaded_timestamp_seconds");
      cards.push(el("div", { class: "card", id: "health-metrics" }, el("h2", null, "Numbers (/v1/metrics)"), kvTable([
        ["requests answered", num(total(s, req))],
        ["client errors (4xx)", num(total(s, req, (l) => (l.status || "").startsWith("4")))],
        ["server errors (5xx)", num(total(s, req, (l) => (l.status || "").startsWith("5")))],
        ["recommendation requests", num(recCount)],
        ["recommendation latency, mean", ms(recCount ? total(s, dur + "_sum", recRoute) / recCount : null)],
        ["recommendation latency, p50 · p95", `${ms(quantile(s, dur, 0.5, recRoute))} · ${ms(quantile(s, dur, 0.95, recRoute))}`],
        ["events stored", num(total(s, "lmrec_events_ingested_total"))],
        ["duplicate events", num(total(s, "lmrec_events_duplicate_total"))],
        ["users forgotten", num(total(s, "lmrec_users_forgotten_total"))],
        ["reloads ok · failed", `${num(total(s, "lmrec_model_reloads_total", (l) => l.outcome === "ok"))} · ` +
          `${num(total(s, "lmrec_model_reloads_total", (l) => l.outcome === "failed"))}`],
        ["model loaded", when(loaded)]])));
    } else cards.push(el("div", { class: "card" }, empty("metrics unavailable: " + metrics.reason.message)));
    fill("health-body", el("div", { class: "grid two" }, cards));
    setStatus("health-status", "Updated " + when(Date.now() / 1000));
  }

  $("health-refresh").addEventListener("click", loadHealth);

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && current === "user" && userState.id) pollUser();
  });

  start();
})();
