// The search page: the first stage's top results beside the reranked ones, joined by lines.
"use strict";

const form = document.getElementById("search-form");
const SVG = "http://www.w3.org/2000/svg";
let shown = null; // the last response, redrawn when the layout changes
let latest = 0; // the newest search: an older one that answers late is not shown

async function start() {
  let info;
  try {
    info = await api("/v1/info");
  } catch (error) {
    return showError(error);
  }
  document.getElementById("model").textContent = info.model;
  const select = document.getElementById("first-stage");
  for (const kind of info.first_stages) select.append(el("option", { value: kind, selected: kind === info.first_stage }, kind));
  if (!info.first_stages.length) {
    document.getElementById("status").textContent =
      "This server has no index to search (start it with finerank serve --index DIR); its rerank APIs still work.";
    for (const control of form.elements) control.disabled = true;
    return;
  }
  document.getElementById("status").textContent = `${info.index_documents} documents indexed.`;
  const params = new URLSearchParams(location.search);
  if (params.get("q")) document.getElementById("query").value = params.get("q");
  for (const [name, id] of [["first_stage", "first-stage"], ["top_n", "top-n"]]) {
    const choices = [...document.getElementById(id).options].map((o) => o.value);
    if (choices.includes(params.get(name))) document.getElementById(id).value = params.get(name);
  }
  const candidates = Number(params.get("candidates"));
  if (Number.isInteger(candidates) && candidates >= 1 && candidates <= 1000) document.getElementById("candidates").value = candidates;
  if (params.get("rerank") === "false") document.getElementById("rerank").checked = false;
  if (info.queries_to_judge) document.getElementById("next-query").hidden = false;
  if (params.get("q")) search();
}

async function search() {
  const query = document.getElementById("query").value;
  if (!query.trim()) return;
  const body = {
    query,
    first_stage: document.getElementById("first-stage").value,
    top_n: Number(document.getElementById("top-n").value),
    candidates: Number(document.getElementById("candidates").value),
    rerank: document.getElementById("rerank").checked,
  };
  const params = new URLSearchParams({ q: query, first_stage: body.first_stage, top_n: body.top_n, candidates: body.candidates });
  if (!body.rerank) params.set("rerank", "false");
  history.replaceState(null, "", "?" + params);
  const status = document.getElementById("status");
  status.className = "status";
  status.textContent = "Searching…";
  const began = performance.now();
  const mine = ++latest;
  let answer;
  try {
    answer = await api("/v1/search", body);
  } catch (error) {
    if (mine === latest) showError(error);
    return;
  }
  if (mine !== latest) return;
  shown = answer;
  const timings = Object.entries(shown.timings_ms).map(([stage, ms]) => `${stage.replace("_", " ")} ${ms.toFixed(1)} ms`);
  status.textContent = `${timings.join(" · ")} · round trip ${(performance.now() - began).toFixed(0)} ms` +
    (shown.first_stage_results.length ? "" : ` · no results: ${shown.note || "no document matches this query"}`);
  render(shown);
  if (shown.reranker && shown.first_stage_results.length) loadGrades(mine);
}

// --- judging: grade the pooled results of both lists (0-3), stored by POST /v1/judgments ---------------
let grades = new Map(); // document id -> grade, for the query shown

async function loadGrades(mine) {
  let pooled;
  try {
    pooled = await api("/v1/judgments/pool", { query: shown.query, depth: shown.results.length || 1 });
  } catch (error) {
    return showError(error);
  }
  if (mine !== latest) return;
  grades = new Map(pooled.results.filter((r) => r.grade !== null).map((r) => [r.id, r.grade]));
  document.getElementById("judging").hidden = false;
  for (const node of document.querySelectorAll(".hit")) decorate(node);
  counter();
}

// The pool, in the order results are offered: reranked and first stage interleaved, each document once.
function poolOrder() {
  const ids = [];
  const lists = [shown.results, shown.first_stage_results];
  for (let i = 0; i < Math.max(...lists.map((l) => l.length)); i++) {
    for (const list of lists) if (list[i] && !ids.includes(list[i].id)) ids.push(list[i].id);
  }
  return ids;
}

function cardOf(id) {
  return document.querySelector(`#reranked-list [data-id="${CSS.escape(id)}"]`) ||
    document.querySelector(`#first-list [data-id="${CSS.escape(id)}"]`);
}

function decorate(node) {
  const id = node.dataset.id;
  const grade = grades.get(id);
  node.classList.toggle("ungraded", grade === undefined);
  let bar = node.querySelector(".grades");
  if (!bar) {
    bar = el("div", { class: "grades", role: "group", "aria-label": "grade" });
    for (const [value, word] of [[0, "not relevant"], [1, "related"], [2, "relevant"], [3, "perfect"]]) {
      bar.append(el("button", { type: "button", "data-grade": value, title: word, tabindex: -1,
        onclick: () => judge(id, value) }, `${value} ${word}`));
    }
    node.append(bar);
  }
  for (const button of bar.querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.grade) === grade));
  }
  node.setAttribute("data-grade", grade === undefined ? "" : grade);
}

function counter() {
  const ids = poolOrder();
  const left = ids.filter((id) => !grades.has(id)).length;
  document.getElementById("to-grade").textContent = left
    ? `${left} of ${ids.length} results still need a grade.` : `All ${ids.length} results graded.`;
}

async function judge(id, grade) {
  try {
    await api("/v1/judgments", { query: shown.query, id, grade });
  } catch (error) {
    return showError(error);
  }
  grades.set(id, grade);
  for (const node of document.querySelectorAll(`[data-id="${CSS.escape(id)}"].hit`)) decorate(node);
  counter();
}

function moveFocus(id, step) {
  const ids = poolOrder();
  const next = ids[ids.indexOf(id) + step];
  if (next !== undefined) cardOf(next).focus();
}

async function nextQuery() {
  let next;
  try {
    next = await api("/v1/judgments/next");
  } catch (error) {
    return showError(error);
  }
  if (!next.query) {
    document.getElementById("to-grade").textContent = "Every query of the server's list is judged.";
    return;
  }
  document.getElementById("query").value = next.query;
  search();
}

function render(data) {
  document.getElementById("results").hidden = false;
  document.getElementById("legend").hidden = !data.reranker;
  document.getElementById("first-name").textContent = `${data.first_stage} · query analysed as ${data.analysis}`;
  document.getElementById("reranked-name").textContent = data.reranker
    ? `${data.reranker} · route for ${data.language} queries` : `(not reranked; query language ${data.language})`;
  document.getElementById("reranked-column").hidden = !data.reranker;
  const reranked = new Map(data.results.map((hit) => [hit.id, hit]));
  const first = new Map(data.first_stage_results.map((hit) => [hit.id, hit]));
  fill("first-list", data.first_stage_results, (hit) => firstMove(hit, reranked, data));
  fill("reranked-list", data.reranker ? data.results : [], (hit) => rerankedMove(hit, first));
  drawLines();
}

function firstMove(hit, reranked, data) {
  if (!data.reranker) return null;
  const after = reranked.get(hit.id);
  if (!after) return el("span", { class: "move down" }, `out of the top ${data.results.length}`);
  return moveBadge(hit.rank, after.rank, `now #${after.rank}`);
}

function rerankedMove(hit, first) {
  const note = first.has(hit.id) ? `was #${hit.original_rank}` : `from #${hit.original_rank}`;
  return moveBadge(hit.original_rank, hit.rank, note);
}

function moveBadge(before, after, note) {
  const kind = after < before ? "up" : after > before ? "down" : "same";
  const arrow = { up: "↑", down: "↓", same: "=" }[kind];
  return el("span", { class: `move ${kind}` }, `${arrow} ${note}`);
}

function fill(listId, hits, move) {
  const list = document.getElementById(listId);
  list.replaceChildren(...hits.map((hit) => card(hit, move(hit), listId)));
}

function card(hit, move, listId) {
  const title = hit.document.title || hit.id;
  const scores = [`score ${fmt(hit.score)}`];
  if (hit.model_score) {
    const m = hit.model_score;  // a probability only when the model is calibrated
    scores.push(m.probability ? `p(relevant) ${fmt(m.calibrated)} (raw ${fmt(m.raw)})` : `model ${fmt(m.raw)} (uncalibrated)`);
  }
  scores.push(`id ${hit.id}`);
  const node = el(
    "li", { class: "hit", tabindex: 0, "data-id": hit.id, "data-list": listId, lang: langOf(title + hit.document.text) },
    el("div", { class: "hit-head" }, el("span", { class: "rank" }, `#${hit.rank}`), el("span", { class: "title" }, title), move),
    snippet(hit),
    el("div", { class: "scores" }, scores.join(" · ")),
  );
  for (const event of ["mouseenter", "focus"]) node.addEventListener(event, () => pair(hit.id, true));
  for (const event of ["mouseleave", "blur"]) node.addEventListener(event, () => pair(hit.id, false));
  node.addEventListener("keydown", (event) => {
    if (event.target !== node) return;
    if (event.key === "Enter") node.classList.toggle("expanded");
    else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      moveFocus(hit.id, event.key === "ArrowDown" ? 1 : -1);
    } else if (/^[0-3]$/.test(event.key) && !document.getElementById("judging").hidden) {
      event.preventDefault();
      judge(hit.id, Number(event.key)).then(() => {
        const ids = poolOrder();
        const after = ids.slice(ids.indexOf(hit.id) + 1).find((id) => !grades.has(id));
        if (after !== undefined) cardOf(after).focus();
      });
    }
  });
  return node;
}

// The passage that matched, its query words marked (text nodes only: no HTML from the index is run).
// The server counts characters as Python does (code points); Array.from counts them the same way.
function snippet(hit) {
  const { text, start, end, spans } = hit.highlight;
  const chars = Array.from(text);
  const slice = (a, b) => chars.slice(a, b).join("");
  const parts = [start > 0 ? "…" : ""];
  let at = 0;
  for (const [s, e] of spans) {
    parts.push(slice(at, s), el("mark", {}, slice(s, e)));
    at = e;
  }
  parts.push(slice(at), end < Array.from(hit.document.text).length ? "…" : "");
  return el("p", { class: "snippet" }, parts);
}

function pair(id, on) {
  for (const node of document.querySelectorAll(`[data-id="${CSS.escape(id)}"]`)) node.classList.toggle("active", on);
}

// One curve per document shown in either list, from its first-stage place to its reranked place;
// a document from (or leaving to) beyond the top ends at the bottom edge of that column.
function drawLines() {
  const svg = document.getElementById("lines");
  svg.replaceChildren();
  if (!shown || !shown.reranker) return;
  const box = svg.getBoundingClientRect();
  const edge = (listId) => document.getElementById(listId).getBoundingClientRect().bottom - box.top;
  const middle = (node) => {
    const r = node.getBoundingClientRect();
    return r.top + r.height / 2 - box.top;
  };
  const find = (listId, id) => document.querySelector(`#${listId} [data-id="${CSS.escape(id)}"]`);
  const ids = new Set([...shown.first_stage_results, ...shown.results].map((hit) => hit.id));
  for (const id of ids) {
    const left = find("first-list", id);
    const right = find("reranked-list", id);
    const y1 = left ? middle(left) : edge("first-list");
    const y2 = right ? middle(right) : edge("reranked-list");
    const hit = shown.results.find((h) => h.id === id);
    const kind = !right ? "down" : hit.rank < hit.original_rank ? "up" : hit.rank > hit.original_rank ? "down" : "same";
    const w = box.width;
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", `M0,${y1} C${w / 2},${y1} ${w / 2},${y2} ${w},${y2}`);
    path.setAttribute("class", `line ${kind}${left && right ? "" : " partial"}`);
    path.setAttribute("data-id", id);
    svg.append(path);
  }
}

document.getElementById("next-query").addEventListener("click", nextQuery);
form.addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
new ResizeObserver(drawLines).observe(document.getElementById("results"));
start();
