// The report page of benchmarks.view. Every element is built with createElement/textContent:
// text from models and data files never becomes markup.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const DIMS = DATA.dimensions;
  const SHORT = DATA.short;
  const EPISODES_PER_PAGE = 50;
  const CARDS_PER_PAGE = 10;

  // ---------------------------------------------------------------- DOM helpers

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "–";
    return Number.isInteger(value) ? String(value) : Number(value).toFixed(2);
  }

  function numberInput(id, placeholder) {
    return el("input", {type: "number", step: "any", id: id, placeholder: placeholder});
  }

  function select(id, label, values) {
    const node = el("select", {id: id}, el("option", {value: ""}, "all"));
    for (const v of values) node.append(el("option", {value: v}, v === "" ? "(none)" : v));
    return el("label", {}, label, node);
  }

  function distinct(values) {
    return Array.from(new Set(values)).sort();
  }

  function inRange(value, low, high) {
    return value !== null && value !== undefined && (low === null || value >= low) && (high === null || value <= high);
  }

  function readNumber(id) {
    const text = document.getElementById(id).value;
    return text === "" ? null : Number(text);
  }

  function pager(state, total, perPage, redraw, id) {
    const pages = Math.max(1, Math.ceil(total / perPage));
    state.page = Math.min(state.page, pages - 1);
    const go = (delta) => () => { state.page = Math.max(0, Math.min(pages - 1, state.page + delta)); redraw(); };
    return el("div", {class: "pager", id: id},
      el("button", {onclick: go(-1), disabled: state.page === 0 ? "" : null, class: "prev"}, "◀ previous"),
      el("span", {}, `page ${state.page + 1} of ${pages}`),
      el("button", {onclick: go(1), disabled: state.page >= pages - 1 ? "" : null, class: "next"}, "next ▶"));
  }

  // ---------------------------------------------------------------- shared pieces

  function taskOf(item) { return DATA.tasks[item.t]; }

  function nameOf(task, seat) { return task.names[seat] || `seat ${seat}`; }

  // One turn row: [turn, seat, speaker, action type, text, prompt tokens, completion tokens].
  function conversation(task, turns, classify) {
    const body = el("tbody");
    for (const [i, row] of turns.entries()) {
      const [turn, seat, speaker, action, text, prompt, completion] = row;
      const extra = classify ? classify(row, i) : "";
      body.append(el("tr", {class: `turn seat${seat} ${extra}`.trim()},
        el("td", {class: "num"}, turn), el("td", {}, speaker || nameOf(task, seat)), el("td", {}, action),
        el("td", {class: "text"}, text), el("td", {class: "num", title: "prompt / completion tokens"},
          `${prompt} / ${completion}`)));
    }
    return el("table", {class: "conversation"},
      el("thead", {}, el("tr", {}, ["turn", "speaker", "action", "text", "tokens"].map((h) => el("th", {}, h)))),
      body);
  }

  function scoreTable(columns) {
    // columns: [[label, scores as a list in DIMS order or a {dim: value} object or null], ...]
    const value = (scores, i) => (scores === null || scores === undefined ? null
      : Array.isArray(scores) ? scores[i] : scores[DIMS[i]]);
    return el("table", {class: "scores"},
      el("thead", {}, el("tr", {}, el("th", {}, "dimension"), columns.map(([label]) => el("th", {}, label)))),
      el("tbody", {}, DIMS.map((dim, i) => el("tr", {}, el("td", {}, dim),
        columns.map(([, scores]) => el("td", {class: "num"}, fmt(value(scores, i))))))));
  }

  // An episode's scores as one row per seat, the dimensions' short names as columns; tested seats marked.
  function compactScores(e) {
    const task = taskOf(e);
    return el("table", {class: "scores compact"},
      el("thead", {}, el("tr", {}, el("th", {}, "seat"), SHORT.map((s, d) => el("th", {title: DIMS[d]}, s)))),
      el("tbody", {}, [0, 1].map((seat) => el("tr", {class: e.seats.includes(seat) ? "tested" : ""},
        el("td", {title: nameOf(task, seat)}, `${seat}${e.seats.includes(seat) ? " (tested)" : ""}`),
        DIMS.map((_, d) => el("td", {class: "num"}, fmt(e.scores ? e.scores[seat][d] : null)))))));
  }

  // ---------------------------------------------------------------- episodes

  const episodeState = {page: 0, sort: null, desc: false, selected: null, rows: DATA.episodes.map((_, i) => i)};

  const EPISODE_COLUMNS = [
    ["#", (e, i) => i, true],
    ["task", (e) => taskOf(e).codename],
    ["scenario", (e) => taskOf(e).scenario],
    ["split", (e) => taskOf(e).split],
    ["seat 0 model", (e) => e.models[0]],
    ["seat 1 model", (e) => e.models[1]],
    ["turns", (e) => e.turns.length, true],
    ["termination", (e) => e.term],
    ["branch", (e) => (e.parent === null ? "" : `turn ${e.bt}${e.kept ? " kept" : ""}`)],
  ].concat([0, 1].flatMap((seat) => SHORT.map((short, d) =>
    [`${seat}:${short}`, (e) => (e.scores ? e.scores[seat][d] : null), true])));

  function episodeFilters() {
    const dims = el("select", {id: "f-dim"}, DIMS.map((d) => el("option", {value: d}, d)));
    dims.value = "goal";
    const seat = el("select", {id: "f-seat"}, el("option", {value: "any"}, "either seat"),
      el("option", {value: "0"}, "seat 0"), el("option", {value: "1"}, "seat 1"));
    const models = distinct(DATA.episodes.flatMap((e) => e.models));
    const box = el("div", {class: "filters"},
      select("f-model", "model", models),
      select("f-split", "split", distinct(DATA.tasks.map((t) => t.split))),
      select("f-term", "termination", distinct(DATA.episodes.map((e) => e.term))),
      select("f-src", "file", distinct(DATA.episodes.map((e) => e.src))),
      el("label", {}, "score", dims, seat, "from", numberInput("f-min", "min"), "to", numberInput("f-max", "max")),
      el("button", {id: "f-reset", onclick: resetEpisodeFilters}, "reset"),
      el("span", {class: "shown"}, el("span", {id: "episodes-shown"}), ` of ${DATA.episodes.length} episodes`));
    box.addEventListener("input", applyEpisodeFilters);
    box.addEventListener("change", applyEpisodeFilters);
    return box;
  }

  function resetEpisodeFilters() {
    for (const id of ["f-model", "f-split", "f-term", "f-src", "f-min", "f-max"]) document.getElementById(id).value = "";
    applyEpisodeFilters();
  }

  function episodeMatches(e, f) {
    const task = taskOf(e);
    if (f.model && !e.models.includes(f.model)) return false;
    if (f.split !== null && task.split !== f.split) return false;
    if (f.term !== null && e.term !== f.term) return false;
    if (f.src && e.src !== f.src) return false;
    if (f.min === null && f.max === null) return true;
    if (!e.scores) return false;
    const d = DIMS.indexOf(f.dim);
    const seats = f.seat === "any" ? [0, 1] : [Number(f.seat)];
    return seats.some((s) => inRange(e.scores[s][d], f.min, f.max));
  }

  function applyEpisodeFilters() {
    const value = (id) => document.getElementById(id).value;
    const f = {model: value("f-model"), split: value("f-split"), term: value("f-term"), src: value("f-src"),
      dim: value("f-dim"), seat: value("f-seat"), min: readNumber("f-min"), max: readNumber("f-max")};
    // An empty select value means "all"; the "(none)" option of an empty split/termination is "".
    for (const key of ["split", "term"]) if (document.getElementById(`f-${key}`).selectedIndex === 0) f[key] = null;
    episodeState.rows = DATA.episodes.map((_, i) => i).filter((i) => episodeMatches(DATA.episodes[i], f));
    sortEpisodes();
    episodeState.page = 0;
    drawEpisodeTable();
  }

  function sortEpisodes() {
    if (episodeState.sort === null) return;
    const key = EPISODE_COLUMNS[episodeState.sort][1];
    const sign = episodeState.desc ? -1 : 1;
    const value = (i) => key(DATA.episodes[i], i);
    episodeState.rows.sort((a, b) => {
      const x = value(a), y = value(b);
      if (x === y) return a - b;
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * sign;
    });
  }

  function sortBy(column) {
    episodeState.desc = episodeState.sort === column ? !episodeState.desc : false;
    episodeState.sort = column;
    sortEpisodes();
    drawEpisodeTable();
  }

  function episodeRow(i) {
    const e = DATA.episodes[i];
    const cells = EPISODE_COLUMNS.map(([name, key, numeric], c) => {
      const v = key(e, i);
      const text = numeric && c > 0 ? fmt(v) : String(v);
      return el("td", {class: numeric ? "num" : c === 2 ? "clip" : "", title: c === 2 ? text : null}, text);
    });
    return el("tr", {class: episodeState.selected === i ? "selected" : "", "data-index": i,
      onclick: () => showEpisode(i)}, cells);
  }

  function drawEpisodeTable() {
    const {rows, page} = episodeState;
    const start = page * EPISODES_PER_PAGE;
    document.getElementById("episodes-shown").textContent = rows.length;
    const head = el("tr", {}, EPISODE_COLUMNS.map(([name], c) => el("th", {
      class: "sortable" + (episodeState.sort === c ? (episodeState.desc ? " sorted-desc" : " sorted-asc") : ""),
      title: "sort", onclick: () => sortBy(c)}, name)));
    const table = el("table", {class: "episodes", id: "episodes-table"}, el("thead", {}, head),
      el("tbody", {}, rows.slice(start, start + EPISODES_PER_PAGE).map(episodeRow)));
    document.getElementById("episodes-table-wrap").replaceChildren(table);
    document.getElementById("episodes-pager").replaceWith(
      pager(episodeState, rows.length, EPISODES_PER_PAGE, drawEpisodeTable, "episodes-pager"));
  }

  function showEpisode(i) {
    episodeState.selected = i;
    for (const tr of document.querySelectorAll("#episodes-table tbody tr")) {
      tr.classList.toggle("selected", Number(tr.dataset.index) === i);
    }
    const detail = document.getElementById("episode-detail");
    detail.replaceChildren(episodeDetail(DATA.episodes[i], i));
    detail.scrollIntoView({block: "start"});
  }

  function episodeDetail(e, i) {
    const task = taskOf(e);
    const branch = e.parent === null ? "" : ` · branch of ${e.parent} from turn ${e.bt}${e.kept ? " (kept)" : ""}`;
    const judgeRows = DIMS.map((dim, d) => el("tr", {}, el("td", {}, dim), [0, 1].flatMap((seat) => [
      el("td", {class: "num"}, fmt(e.scores ? e.scores[seat][d] : null)),
      el("td", {class: "text"}, e.reasoning ? e.reasoning[seat][d] : "")])));
    return el("div", {id: "episode-view"},
      el("h2", {}, `#${i} ${task.codename}`),
      el("div", {class: "meta"}, `episode ${e.id} · ${e.src} · seed ${e.seed ?? "–"} · ended by ${e.term || "–"}` +
        ` · tested seat(s) ${e.seats.join(", ")}${branch}`),
      el("div", {class: "meta"}, `scenario: ${task.scenario}`),
      el("div", {class: "columns"}, [0, 1].map((seat) => el("div", {},
        el("h3", {}, `What ${nameOf(task, seat)} (seat ${seat}, ${e.models[seat]}) saw`),
        el("div", {class: "background"}, task.backgrounds[seat])))),
      el("h3", {}, "Conversation"),
      conversation(task, e.turns),
      el("h3", {}, `Judge: ${e.judge || "–"}`),
      e.error ? el("div", {class: "reason"}, `not evaluated: ${e.error}`) : null,
      e.comment ? el("div", {class: "meta"}, e.comment) : null,
      el("table", {class: "scores judge"},
        el("thead", {}, el("tr", {}, el("th", {}, "dimension"), [0, 1].flatMap((seat) => [
          el("th", {}, `${nameOf(task, seat)}`), el("th", {}, "reasoning")]))),
        el("tbody", {}, judgeRows)));
  }

  function episodesView() {
    return [episodeFilters(), el("div", {class: "pager", id: "episodes-pager"}),
      el("div", {class: "table-wrap", id: "episodes-table-wrap"}),
      el("div", {class: "detail", id: "episode-detail"}, el("p", {class: "empty"}, "Click an episode to read it."))];
  }

  // ---------------------------------------------------------------- branches

  const branchState = {page: 0};

  function continuationColumn(e, index, from, label) {
    const task = taskOf(e);
    return el("div", {class: "continuation" + (e.kept ? " kept" : ""), "data-index": index},
      el("h4", {}, label, e.kept ? el("span", {class: "badge kept"}, "kept") : null,
        el("a", {class: "link", onclick: () => { showTab("episodes"); showEpisode(index); }}, ` #${index}`)),
      el("div", {class: "meta"}, `${e.id} · ${e.models.join(" / ")} · ${e.turns.length - from} turns after the branch`),
      compactScores(e),
      conversation(task, e.turns.slice(from)));
  }

  function branchTree(tree) {
    const parent = tree.index === null ? null : DATA.episodes[tree.index];
    const first = DATA.episodes[tree.forks[0].children[0]];
    const task = taskOf(parent || first);
    const card = el("div", {class: "card tree"},
      el("h3", {}, `${task.codename}: episode ${tree.parent}`),
      parent ? null : el("div", {class: "meta"}, "(the parent's store was not given: its own turns are not shown)"));
    for (const fork of tree.forks) {
      const children = fork.children.map((i) => DATA.episodes[i]);
      const history = (parent || children[0]).turns.slice(0, fork.turn);
      const columns = children.map((e, k) => continuationColumn(e, fork.children[k], fork.turn, `continuation ${k + 1}`));
      if (parent) {
        const original = continuationColumn(parent, tree.index, fork.turn, "original");
        original.querySelector("h4").append(el("span", {class: "badge original"}, "original"));
        columns.unshift(original);
      }
      card.append(el("div", {class: "fork", "data-turn": fork.turn},
        el("h4", {}, `Branch at turn ${fork.turn}: ${children.length} continuation(s)`),
        el("div", {class: "meta"}, `Shared history (${history.length} turns)`),
        history.length ? conversation(task, history) : el("p", {class: "empty"}, "(none: sampled from the start)"),
        el("div", {class: "columns"}, columns)));
    }
    return card;
  }

  function drawBranches() {
    const start = branchState.page * CARDS_PER_PAGE;
    const list = document.getElementById("branches-list");
    list.replaceChildren(...DATA.branches.slice(start, start + CARDS_PER_PAGE).map(branchTree));
    if (!DATA.branches.length) list.append(el("p", {class: "empty"}, "No branches in the given files."));
    document.getElementById("branches-pager").replaceWith(
      pager(branchState, DATA.branches.length, CARDS_PER_PAGE, drawBranches, "branches-pager"));
  }

  function branchesView() {
    return [el("div", {class: "pager", id: "branches-pager"}), el("div", {id: "branches-list"})];
  }

  // ---------------------------------------------------------------- pairs

  const pairState = {page: 0, rows: DATA.pairs.map((_, i) => i)};

  // The error turn and the segment of one side, counted over the trained seat's turns in history + side.
  function segmentMarker(pair, side, offset) {
    const span = pair.segment[side];
    const counter = {n: 0};
    const all = pair.history.concat(pair[side] || []);
    const marks = all.map((row) => {
      if (row[1] !== pair.seat) return "";
      const n = counter.n++;
      if (!span || n < span[0] || n > span[1]) return "";
      return (n === pair.error_turn && ["sdpo", "dpo"].includes(pair.kind)) ? "segment error-turn" : "segment";
    });
    return (row, i) => marks[offset + i];
  }

  function pairCard(index) {
    const pair = DATA.pairs[index];
    const task = taskOf(pair);
    const sides = pair.rejected === null ? ["chosen"] : ["chosen", "rejected"];
    const reasons = [];
    if (pair.error_reason) reasons.push(el("div", {class: "reason error-reason"}, `error turn: ${pair.error_reason}`));
    if (pair.segment_reason) reasons.push(el("div", {class: "reason segment-reason"}, `segment: ${pair.segment_reason}`));
    else if (pair.segment_source) reasons.push(el("div", {class: "meta"}, `segment: ${pair.segment_source}`));
    return el("div", {class: "card pair", "data-kind": pair.kind, "data-index": index},
      el("h3", {}, `${pair.id}`, el("span", {class: "badge"}, pair.kind)),
      el("div", {class: "meta"}, `${task.codename} · trained seat ${pair.seat} (${nameOf(task, pair.seat)}` +
        `${pair.model ? ", " + pair.model : ""}) · error turn: the trained seat's turn #${pair.error_turn} · segment ` +
        sides.map((s) => `${s} ${JSON.stringify(pair.segment[s])}`).join(", ") + ` · ${pair.src}`),
      reasons,
      scoreTable(sides.map((s) => [s, pair.scores[s] || null])),
      el("div", {class: "meta"}, `Shared history (${pair.history.length} turns)`),
      pair.history.length ? conversation(task, pair.history, segmentMarker(pair, "chosen", 0))
        : el("p", {class: "empty"}, "(none)"),
      el("div", {class: "columns"}, sides.map((side) => el("div", {class: `side ${side}`},
        el("h4", {}, `${side} (segment length ${pair.seglen[side]})`),
        conversation(task, pair[side], segmentMarker(pair, side, pair.history.length))))));
  }

  function pairFilters() {
    const kinds = el("select", {id: "p-kind"}, el("option", {value: ""}, "all"),
      DATA.pair_kinds.map((k) => el("option", {value: k}, k)));
    const box = el("div", {class: "filters"}, el("label", {}, "kind", kinds),
      el("label", {}, "chosen segment length from", numberInput("p-min", "min"), "to", numberInput("p-max", "max")),
      el("span", {class: "shown"}, el("span", {id: "pairs-shown"}), ` of ${DATA.pairs.length} pairs`),
      el("span", {class: "legend"}, el("span", {class: "key-error"}, "error turn"),
        el("span", {class: "key-segment"}, "segment")));
    box.addEventListener("input", applyPairFilters);
    box.addEventListener("change", applyPairFilters);
    return box;
  }

  function applyPairFilters() {
    const kind = document.getElementById("p-kind").value;
    const low = readNumber("p-min"), high = readNumber("p-max");
    pairState.rows = DATA.pairs.map((_, i) => i).filter((i) => {
      const pair = DATA.pairs[i];
      // "sft" stands for both one-sided kinds.
      const kindOk = !kind || pair.kind === kind || (kind === "sft" && pair.kind === "preferred_sft");
      return kindOk && ((low === null && high === null) || inRange(pair.seglen.chosen, low, high));
    });
    pairState.page = 0;
    drawPairs();
  }

  function drawPairs() {
    const start = pairState.page * CARDS_PER_PAGE;
    document.getElementById("pairs-shown").textContent = pairState.rows.length;
    const list = document.getElementById("pairs-list");
    list.replaceChildren(...pairState.rows.slice(start, start + CARDS_PER_PAGE).map(pairCard));
    if (!pairState.rows.length) list.append(el("p", {class: "empty"}, "No pairs match."));
    document.getElementById("pairs-pager").replaceWith(
      pager(pairState, pairState.rows.length, CARDS_PER_PAGE, drawPairs, "pairs-pager"));
  }

  function pairsView() {
    return [pairFilters(), el("div", {class: "pager", id: "pairs-pager"}), el("div", {id: "pairs-list"})];
  }

  // ---------------------------------------------------------------- results

  function resultsCard(result) {
    const counts = Object.entries(result.counts).filter(([, v]) => typeof v === "number")
      .map(([k, v]) => `${k}: ${v}`).join(", ");
    const plots = result.plots.filter((p) => p.uri.startsWith("data:image/png;base64,"))
      .map((p) => el("img", {src: p.uri, alt: p.name, title: p.name}));
    return el("div", {class: "card result"},
      el("h3", {}, result.path),
      el("div", {class: "meta"}, `Mean ± half-width of the 95 % confidence interval over episodes. ${counts}`),
      el("div", {class: "table-wrap"}, el("table", {class: "results"},
        el("thead", {}, el("tr", {}, result.header.map((h) => el("th", {}, h)))),
        el("tbody", {}, result.rows.map((row) => el("tr", {},
          row.map((cell, c) => el("td", {class: c >= 4 ? "num" : ""}, cell))))))),
      el("div", {class: "plots"}, plots));
  }

  function resultsView() {
    if (!DATA.results.length) return [el("p", {class: "empty"}, "No results.json in the given files.")];
    return DATA.results.map(resultsCard);
  }

  // ---------------------------------------------------------------- page

  const VIEWS = {
    episodes: ["Episodes", DATA.episodes.length, episodesView, applyEpisodeFilters],
    branches: ["Branches", DATA.episodes.filter((e) => e.parent !== null).length, branchesView, drawBranches],
    pairs: ["Pairs", DATA.pairs.length, pairsView, applyPairFilters],
    results: ["Results", DATA.results.length, resultsView, null],
  };
  const drawn = new Set();

  function showTab(name) {
    if (!(name in VIEWS)) name = "episodes";
    for (const key of Object.keys(VIEWS)) {
      document.getElementById(`view-${key}`).hidden = key !== name;
      document.getElementById(`tab-${key}`).classList.toggle("active", key === name);
    }
    if (!drawn.has(name)) {
      drawn.add(name);
      const [, , build, draw] = VIEWS[name];
      document.getElementById(`view-${name}`).append(...build());
      if (draw) draw();
    }
    if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  }

  function header() {
    const files = DATA.files.map((f) => `${f.path} (${f.kind}, ${f.records})`).join("; ");
    return el("header", {},
      el("h1", {}, document.title, el("span", {class: "meta"}, ` · generated ${DATA.generated}`)),
      el("nav", {}, Object.entries(VIEWS).map(([key, [label, count]]) =>
        el("button", {id: `tab-${key}`, onclick: () => showTab(key)}, label,
          el("span", {class: "count", id: `count-${key}`}, count)))),
      el("details", {class: "meta"}, el("summary", {}, `${DATA.files.length} file(s) read`), files));
  }

  function start() {
    const main = el("main", {}, Object.keys(VIEWS).map((key) => el("section", {id: `view-${key}`, hidden: ""})));
    document.body.append(header(), main);
    showTab(location.hash.slice(1));
    window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
    document.body.dataset.readyMs = String(Math.round(performance.now()));
    document.body.dataset.ready = "1";
  }

  start();
})();
