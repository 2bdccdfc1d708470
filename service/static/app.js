// lsr-engine search page: plain DOM, no build step, nothing fetched from outside this server.
// GET /ui/config gives the modes, speeds and largest k (from the server's one list of choices) and the
// collection's metadata fields (a JSON filter box is shown when it has some), GET /stats
// the index facts; POST /search (explain) gives the hits; POST
// /encode tells which matched terms are SPLADE expansion terms (in the query vector, not in the query text).
// Matched WordPiece pieces are shown joined into the words they form (check + ##mate: "checkmate"),
// stop-word expansions are left out, and the raw terms sit behind an expander.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("search-form"), input = $("q"), modesBox = $("modes"), kSelect = $("k");
  const speedBox = $("speed-box"), speedSelect = $("speed");
  const filterBox = $("filter-box"), filterInput = $("filter"), filterFields = $("filter-fields");
  const results = $("results"), statusEl = $("status"), errorEl = $("error"), noticeEl = $("notice");
  const legend = $("legend"), goButton = $("go"), moreButton = $("more");

  const SNIPPET_CHARS = 300;
  const MAX_CHIPS = 24;
  const STOP = new Set(("a an and are as at be but by for from has have had how i if in into is it its me my " +
    "no not of on or our so such than that the their them then there these they this to was we were what " +
    "when where which while who whom why will with would you your does do did can could should about also " +
    "been being all any both each more most other some same too very just only").split(" "));

  let config = null;                 // GET /ui/config: modes (with a line on each), speeds, k_max, ...
  let maxK = null;                   // the largest k the server accepts (config.k_max)
  let seq = 0;                       // the latest search; older answers are dropped
  const encodeCache = new Map();     // query text -> Set of expansion tokens (or null when unknown)

  // ---- helpers ---------------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "style") node.style.cssText = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(x) {
    if (typeof x !== "number" || !isFinite(x)) return String(x);
    const a = Math.abs(x);
    if (a === 0) return "0";
    if (a >= 1000) return x.toFixed(0);
    if (a < 0.001) return x.toExponential(2);
    return x.toPrecision(4).replace(/\.?0+$/, "");
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, body) {
    const init = body === undefined ? {headers: {"Accept": "application/json"}} : {
      method: "POST",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify(body),
    };
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, "network", "The server could not be reached (" + e.message + ").");
    }
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    if (!resp.ok) {
      const err = data && data.error;
      const message = (err && err.message) || resp.statusText || "request failed";
      throw new ApiError(resp.status, (err && err.code) || "error", message);
    }
    if (data === null) throw new ApiError(resp.status, "bad_response", "The server answered with no JSON.");
    return data;
  }

  function showError(err) {
    errorEl.replaceChildren(
      el("strong", null, err.status ? `Error ${err.status}` : "Error"),
      err.code && err.code !== "network" ? el("code", null, err.code) : null,
      el("span", {class: "error-message"}, err.message));
    errorEl.hidden = false;
  }

  function showMessage(text) {
    errorEl.replaceChildren(el("span", {class: "error-message"}, text));
    errorEl.hidden = false;
  }

  function clearError() {
    errorEl.hidden = true;
    errorEl.replaceChildren();
  }

  // ---- highlighting --------------------------------------------------------------------------------
  function words(text) {
    return (text.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter((w) => w.length > 1 && !STOP.has(w));
  }

  function escapeRegExp(s) {
    return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  // A matcher for words starting with a query word (class "q") or an expansion word (class "x").
  function makeMatcher(queryWords, expansionWords) {
    const kinds = new Map();
    for (const w of expansionWords) if (w.length > 2) kinds.set(w, "x");
    for (const w of queryWords) kinds.set(w, "q");
    if (!kinds.size) return null;
    const alts = [...kinds.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp).join("|");
    return {re: new RegExp(`(?<![\\p{L}\\p{N}])(${alts})[\\p{L}\\p{N}]*`, "giu"), kinds};
  }

  function highlighted(text, matcher) {
    if (!matcher || !text) return [text || ""];
    const out = [];
    let last = 0;
    for (const m of text.matchAll(matcher.re)) {
      if (m.index > last) out.push(text.slice(last, m.index));
      const kind = matcher.kinds.get(m[1].toLowerCase()) || "q";
      out.push(el("mark", {class: kind === "x" ? "hl-x" : "hl-q"}, m[0]));
      last = m.index + m[0].length;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  }

  function snippet(text) {
    if (!text || text.length <= SNIPPET_CHARS) return text || "";
    let cut = text.lastIndexOf(" ", SNIPPET_CHARS);
    if (cut < SNIPPET_CHARS * 0.8) cut = SNIPPET_CHARS;
    return text.slice(0, cut).replace(/[\s.,;:]+$/, "") + "…";
  }

  // ---- modes ---------------------------------------------------------------------------------------
  function selectedMode() {
    const checked = modesBox.querySelector("input[name=mode]:checked");
    return checked ? checked.value : null;
  }

  function renderModes(modes, current, help) {
    const legendEl = modesBox.querySelector("legend");
    modesBox.replaceChildren(legendEl);
    for (const mode of modes) {
      const id = "mode-" + mode;
      modesBox.append(el("span", {class: "mode"},
        el("input", {type: "radio", name: "mode", id, value: mode, checked: mode === current}),
        el("label", {for: id, title: help[mode] || mode}, mode)));
    }
  }

  function selectedSpeed() {
    return speedBox.hidden ? null : speedSelect.value || null;
  }

  function renderSpeeds(speeds, current) {
    speedSelect.replaceChildren(...speeds.map((s) => el("option", {value: s, selected: s === current}, s)));
    speedBox.hidden = speeds.length < 2;
  }

  // ---- metadata filter ------------------------------------------------------------------------------
  function exampleFilter(name, type) {
    const value = {keyword: "value", boolean: true, integer: 2020, float: 0.5}[type];
    if (type === "integer" || type === "float") return JSON.stringify({field: name, gte: value});
    return JSON.stringify({field: name, eq: value === undefined ? "value" : value});
  }

  function renderFilter(fields, ops) {
    const names = Object.keys(fields || {});
    filterBox.hidden = names.length === 0;
    if (!names.length) return;
    const items = names.map((n) => {
      const type = fields[n];
      const tip = ops && Array.isArray(ops[type]) ? `${type}: ${ops[type].join(", ")}` : type;
      return el("span", {title: tip}, el("code", null, n), ` (${type})`);
    });
    const listed = [];
    items.forEach((item, i) => { if (i) listed.push(", "); listed.push(item); });
    filterFields.replaceChildren("Fields: ", ...listed, ". Combine with {\"and\": [...]}, {\"or\": [...]}, " +
      "{\"not\": {...}}.");
    filterInput.placeholder = exampleFilter(names[0], fields[names[0]]);
  }

  // the filter box's JSON object, null when empty; throws an Error naming the problem
  function filterValue() {
    if (filterBox.hidden) return null;
    const text = filterInput.value.trim();
    if (!text) return null;
    let value;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new ApiError(0, "bad_filter", "The filter is not valid JSON (" + e.message + ").");
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new ApiError(0, "bad_filter", 'The filter must be a JSON object, e.g. ' +
        (filterInput.placeholder || '{"field": "lang", "eq": "en"}') + ".");
    }
    return value;
  }

  async function loadConfig() {
    try {
      config = await api("/ui/config");
    } catch (err) {
      showError(err);
      modesBox.hidden = true;
      speedBox.hidden = true;
      return;
    }
    const k = config.k_max ?? config.max_k;  // max_k: its name on older servers
    maxK = Number.isInteger(k) && k > 0 ? k : null;
    const wanted = new URLSearchParams(location.search);
    const modes = Array.isArray(config.modes) && config.modes.length ? config.modes : [config.default_mode];
    const mode = wanted.get("mode");
    renderModes(modes, modes.includes(mode) ? mode : (config.default_mode || modes[0]), config.mode_help || {});
    modesBox.hidden = modes.length < 2;
    const speeds = Array.isArray(config.speeds) ? config.speeds : [];
    const speed = wanted.get("speed");
    renderSpeeds(speeds, speeds.includes(speed) ? speed : config.default_speed);
    renderFilter(config.fields, config.filter_ops);
  }

  async function loadStats() {  // the index facts of the info line
    let stats;
    try {
      stats = await api("/stats");
    } catch (err) {
      showError(err);
      return;
    }
    const parts = [];
    if (typeof stats.documents === "number") parts.push(`${stats.documents.toLocaleString()} documents`);
    if (stats.model) parts.push(`model ${stats.model}`);
    if (Array.isArray(stats.modes)) parts.push(`modes: ${stats.modes.join(", ")}`);
    $("index-info").textContent = parts.join(" · ");
  }

  // ---- search --------------------------------------------------------------------------------------
  async function expansionOf(query) {
    if (encodeCache.has(query)) return encodeCache.get(query);
    let found = null;
    try {
      const enc = await api("/encode", {text: query});
      found = new Set(enc.expansion || []);
    } catch (e) {
      found = null;  // no encoder on this service: expansion terms cannot be told apart
    }
    encodeCache.set(query, found);
    return found;
  }

  function setBusy(busy) {
    results.setAttribute("aria-busy", busy ? "true" : "false");
    form.classList.toggle("busy", busy);
    goButton.textContent = busy ? "Searching…" : "Search";
  }

  function setK(k) {
    if (![...kSelect.options].some((o) => parseInt(o.value, 10) === k)) {
      const option = el("option", {value: k}, k);
      const after = [...kSelect.options].find((o) => parseInt(o.value, 10) > k);
      kSelect.insertBefore(option, after || null);
    }
    kSelect.value = String(k);
  }

  async function search() {
    const query = input.value;
    const mode = selectedMode(), speed = selectedSpeed();
    const k = parseInt(kSelect.value, 10) || 10;
    const my = ++seq;
    clearError();
    if (!query.trim()) {  // nothing to send: say so here
      seq++;
      results.dataset.state = "empty-query";
      showMessage("Type a query first: the search box is empty.");
      input.focus();
      return;
    }
    let filter = null;
    try {
      filter = filterValue();
    } catch (err) {  // shown like the server's errors, before anything is sent
      seq++;
      results.replaceChildren();
      statusEl.textContent = "";
      results.dataset.state = "error";
      showError(err);
      filterInput.focus();
      return;
    }
    setBusy(true);
    results.dataset.state = "loading";

    const params = new URLSearchParams();
    params.set("q", query);
    if (mode) params.set("mode", mode);
    if (speed && config && speed !== config.default_speed) params.set("speed", speed);
    if (filter) params.set("filter", filterInput.value.trim());
    history.replaceState(null, "", "?" + params.toString());

    const body = {query, k, explain: true, fields: ["title", "text"]};
    if (mode) body.mode = mode;
    if (speed) body.speed = speed;
    if (filter) body.filter = filter;
    const effective = mode || (config && config.default_mode);
    const wantsExpansion = query.trim() && (effective === "sparse" || effective === "hybrid" || !effective);
    try {
      const [res, expansion] = await Promise.all([
        api("/search", body),
        wantsExpansion ? expansionOf(query) : Promise.resolve(null),
      ]);
      if (my !== seq) return;
      render(res, expansion, k);
      results.dataset.state = "done";
    } catch (err) {
      if (my !== seq) return;
      results.replaceChildren();
      statusEl.textContent = "";
      noticeEl.hidden = true;
      legend.hidden = true;
      moreButton.hidden = true;
      results.dataset.state = "error";
      showError(err);
    } finally {
      if (my === seq) setBusy(false);
    }
  }

  function fusionText(fusion) {
    if (!fusion || !fusion.method) return "";
    let s = `fusion ${fusion.method}`;
    if (fusion.normalization) s += ` (${fusion.normalization})`;
    if (fusion.weights) {
      s += " " + Object.entries(fusion.weights).map(([n, w]) => `${n} ${fmt(w)}`).join(", ");
    }
    return s;
  }

  function render(res, expansion, k) {
    const hits = res.hits || [];
    moreButton.hidden = !(maxK && hits.length >= k && k < maxK);
    results.dataset.mode = res.mode || "";
    const parts = [`${hits.length} result${hits.length === 1 ? "" : "s"}`, `mode ${res.mode}`];
    if (typeof res.took_ms === "number") parts.push(`${fmt(res.took_ms)} ms`);
    const fusion = fusionText(res.fusion);
    if (fusion) parts.push(fusion);
    statusEl.textContent = parts.join(" · ");

    const notices = [];
    if (res.truncated) {
      notices.push("Your query is longer than the encoder's maximum length: it was cut, and only its " +
        "beginning was searched.");
    }
    if (hits.length && hits.every((h) => h.weak)) {
      notices.push("Only weak matches: none of these documents shares much of your query.");
    }
    noticeEl.hidden = !notices.length;
    noticeEl.textContent = notices.join(" ");

    const sparseTerms = res.mode === "sparse" || res.mode === "hybrid";
    const expansionSet = sparseTerms && expansion ? expansion : new Set();
    let maxContribution = 0;
    for (const h of hits) {
      for (const t of (h.explanation && h.explanation.terms) || []) {
        maxContribution = Math.max(maxContribution, t.contribution);
      }
    }
    const queryWords = words(res.query || "");
    const expansionWords = [...expansionSet].filter((t) => !t.startsWith("##") && /^[\p{L}\p{N}]+$/u.test(t));
    const matcher = makeMatcher(queryWords, expansionWords);

    legend.hidden = !hits.some((h) => h.explanation && h.explanation.terms && h.explanation.terms.length);
    legend.querySelector(".legend-exp").hidden = !sparseTerms;

    if (!hits.length) {
      results.replaceChildren(el("li", {class: "empty"}, "No document matches this query."));
      return;
    }
    const texts = {query: res.query || ""};
    results.replaceChildren(...hits.map((h) => renderHit(h, res.mode, matcher, expansionSet, maxContribution,
      texts)));
  }

  function renderHit(hit, mode, matcher, expansionSet, maxContribution, texts) {
    const titleId = `hit-${hit.rank}-title`;
    const title = hit.title && hit.title.trim() ? hit.title : hit.id;
    const ex = hit.explanation || {};
    return el("li", {class: "hit", "data-id": hit.id},
      el("article", {"aria-labelledby": titleId},
        el("header", {class: "hit-head"},
          el("span", {class: "rank", "aria-label": `rank ${hit.rank}`}, hit.rank),
          el("h2", {id: titleId, class: "hit-title"}, highlighted(title, matcher)),
          hit.weak ? el("span", {class: "weak", title: "This document shares only a small part of the " +
            "query's words (weighted by how rare they are)."}, "weak match") : null,
          el("span", {class: "score", title: "score"}, fmt(hit.score))),
        el("p", {class: "snippet"}, highlighted(snippet(hit.text), matcher)),
        ex.retrievers ? renderRetrievers(ex.retrievers) : null,
        renderTerms(ex.terms, mode, expansionSet, maxContribution,
          [texts.query, hit.title || "", hit.text || ""]),
        el("p", {class: "doc-id muted"}, "id ", el("code", null, hit.id))));
  }

  function renderRetrievers(retrievers) {
    const order = ((config && config.modes) || []).filter((m) => m in retrievers);
    for (const name of Object.keys(retrievers)) if (!order.includes(name)) order.push(name);
    return el("ul", {class: "retrievers", "aria-label": "Per-retriever score and rank"},
      order.map((name) => {
        const r = retrievers[name];
        if (!r) {
          return el("li", {class: "ret missed", title: `${name}: not in its ranked list`},
            el("span", {class: "ret-name"}, name), el("span", {class: "ret-rank"}, "—"));
        }
        return el("li", {class: "ret", title: `${name}: rank ${r.rank}, score ${r.score}`},
          el("span", {class: "ret-name"}, name),
          el("span", {class: "ret-rank"}, `#${r.rank}`),
          el("span", {class: "ret-score"}, fmt(r.score)));
      }));
  }

  // Words of the query, title and text that matched pieces tile (first piece plain, the rest "##"), the way
  // WordPiece splits them (greedy longest match: with every piece of a word matched, the same split).
  function wordsOf(text) {
    return text.toLowerCase().normalize("NFD").replace(/\p{M}/gu, "").match(/[\p{L}\p{N}]+/gu) || [];
  }

  function joinPieces(terms, sources) {
    const byTerm = new Map(terms.map((t) => [t.term, t]));
    const used = new Set(), joined = [];
    const seen = new Set();
    for (const source of sources) {
      for (const raw of wordsOf(source)) {
        if (seen.has(raw) || raw.length < 2) continue;
        seen.add(raw);
        const pieces = [];
        let at = 0;
        while (at < raw.length) {
          let found = null;
          for (let end = raw.length; end > at && !found; end--) {
            const piece = (at ? "##" : "") + raw.slice(at, end);
            if (byTerm.has(piece) && !used.has(piece)) found = piece;
          }
          if (!found) break;
          pieces.push(found);
          at += found.length - (pieces.length > 1 ? 2 : 0);
        }
        if (at < raw.length || pieces.length < 2) continue;
        pieces.forEach((p) => used.add(p));
        joined.push({word: raw, pieces: pieces.map((p) => byTerm.get(p))});
      }
    }
    return {joined, used};
  }

  function chip(label, contribution, isExpansion, maxContribution, tip, raw, partial) {
    const w = maxContribution > 0 ? Math.max(0, Math.min(1, contribution / maxContribution)) : 0;
    return el("li", {class: (isExpansion ? "chip expansion" : "chip") + (raw ? " raw" : "") +
      (partial ? " partial" : ""),
      style: `--w: ${w.toFixed(3)}`, title: tip, "data-term": label},
      isExpansion ? el("span", {class: "sr-only"}, "expansion term: ") : null,
      el("span", {class: "chip-term"}, label),
      el("span", {class: "chip-value"}, fmt(contribution)));
  }

  function termTip(t, isExpansion) {
    return `${t.term}${isExpansion ? " (expansion)" : ""}: query ${fmt(t.query_weight)} × ` +
      `document ${fmt(t.doc_weight)} = ${fmt(t.contribution)}`;
  }

  function renderTerms(terms, mode, expansionSet, maxContribution, sources) {
    if (!terms) {
      return mode === "dense" ? el("p", {class: "no-terms muted"}, "Dense match: no terms to show.") : null;
    }
    if (!terms.length) return el("p", {class: "no-terms muted"}, "No shared terms.");
    const {joined, used} = joinPieces(terms, sources);
    const words = joined.map((j) => ({
      label: j.word,
      contribution: j.pieces.reduce((s, t) => s + t.contribution, 0),
      expansion: j.pieces.every((t) => expansionSet.has(t.term)),
      tip: `${j.word} = ${j.pieces.map((t) => t.term).join(" + ")}: ` +
        j.pieces.map((t) => fmt(t.contribution)).join(" + ") + ` = ` +
        fmt(j.pieces.reduce((s, t) => s + t.contribution, 0)),
    }));
    const queryWords = wordsOf(sources[0]);
    for (const t of terms) {
      if (used.has(t.term) || t.term.startsWith("##")) continue;  // a lone piece of a word: raw terms only
      const isExpansion = expansionSet.has(t.term);
      if (isExpansion && (STOP.has(t.term) || !/[\p{L}\p{N}]/u.test(t.term))) continue;  // "+and", "+."
      // the first piece of a query word ("er" of "erupt"): shown as that word, marked as a part of it
      const whole = isExpansion || queryWords.includes(t.term) ? null
        : queryWords.find((w) => w.length > t.term.length && w.startsWith(t.term));
      words.push({label: whole || t.term, contribution: t.contribution, expansion: isExpansion,
        partial: Boolean(whole),
        tip: (whole ? `a piece of "${whole}": ` : "") + termTip(t, isExpansion)});
    }
    words.sort((a, b) => b.contribution - a.contribution);
    const shown = words.slice(0, MAX_CHIPS);
    const label = mode === "bm25" ? "Matched BM25 terms" : "Matched SPLADE terms";
    const list = shown.length
      ? el("ul", {class: "chips words", "aria-label": label},
        shown.map((w) => chip(w.label, w.contribution, w.expansion, maxContribution, w.tip, false,
          w.partial)))
      : el("span", {class: "no-terms muted"}, "Only pieces of words match.");
    const more = words.length > shown.length
      ? el("span", {class: "more muted"}, `+${words.length - shown.length} more`) : null;
    const raw = el("details", {class: "raw-terms"},
      el("summary", null, `Raw terms (${terms.length})`),
      el("ul", {class: "chips raw", "aria-label": label + ", as indexed"},
        terms.map((t) => chip(t.term, t.contribution, expansionSet.has(t.term), maxContribution,
          termTip(t, expansionSet.has(t.term)), true))));
    return el("div", {class: "terms"}, list, more, raw);
  }

  // ---- wiring --------------------------------------------------------------------------------------
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    search();
  });
  moreButton.addEventListener("click", () => {
    const k = parseInt(kSelect.value, 10) || 10;
    setK(Math.min(maxK, k * 2));
    search();
  });
  const rerun = () => {
    if (input.value.trim() && results.dataset.state) search();  // the shown query, in the new mode or speed
  };
  modesBox.addEventListener("change", rerun);
  speedSelect.addEventListener("change", rerun);

  (async function init() {
    const wanted = new URLSearchParams(location.search);
    const q = wanted.get("q");
    if (q) input.value = q;
    if (wanted.get("filter")) filterInput.value = wanted.get("filter");
    await Promise.all([loadConfig(), loadStats()]);
    if (q && q.trim()) search();
    else input.focus();
  })();
})();
