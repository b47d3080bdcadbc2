// The evaluation page: a `finerank eval --json` report with its per-query changes and moves.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
let report = null;
let latest = 0; // the newest report asked for: an older one that arrives late is not shown
let fromFile = []; // evaluations opened from a file

async function start() {
  document.getElementById("file").addEventListener("change", openFile);
  document.getElementById("report").addEventListener("change", (event) => load(event.target.value));
  let info;
  try {
    info = await api("/v1/info");
  } catch (error) {
    return showError(error);
  }
  const served = el("optgroup", { label: "served", id: "served" });
  info.reports.forEach((name, i) => served.append(el("option", { value: i }, name)));
  const select = document.getElementById("report");
  select.append(served);
  const wanted = new URLSearchParams(location.search).get("report");
  if (wanted !== null && !(wanted in info.reports)) return showError(new Error(`no report ${wanted}; this server has ${info.reports.length}`));
  if (wanted !== null || info.reports.length) {
    select.value = wanted ?? "0";
    load(select.value);
  }
}

async function load(value) {
  if (value === "") return;
  const mine = ++latest;
  if (value.startsWith("file:")) return show(fromFile[Number(value.slice(5))]);
  try {
    const ev = await api(`/v1/reports/${value}`);
    if (mine === latest) show(ev);
  } catch (error) {
    if (mine === latest) showError(error);
  }
}

async function openFile(event) {
  const file = event.target.files[0];
  if (!file) return;
  try {
    const data = JSON.parse(await file.text());
    const evaluations = Array.isArray(data) ? data : [data];
    if (!evaluations.length || !evaluations.every((ev) => ev && ev.per_query && ev.moves && ev.labels)) {
      throw new Error(`${file.name} is not a finerank eval --json report`);
    }
    fromFile = evaluations;
    const group = el("optgroup", { label: file.name, id: "from-file" });
    evaluations.forEach((ev, i) => group.append(el("option", { value: `file:${i}` }, `${ev.dataset} (${ev.split})`)));
    const select = document.getElementById("report");
    document.getElementById("from-file")?.remove();
    select.append(group);
    select.value = "file:0";
    load(select.value);
  } catch (error) {
    showError(error);
  }
}

const own = (object, key) => Object.prototype.hasOwnProperty.call(object, key);

function show(ev) {
  report = ev;
  const status = document.getElementById("status");
  status.className = "status";
  status.textContent = `${ev.dataset} (${ev.split}): ${ev.queries} queries; top ${ev.candidates} of ${ev.first_stage_name}` +
    (ev.reranker_name ? ` reranked by ${ev.reranker_name}` : " (no reranker)") + (ev.p_value !== null ? `; p = ${fmt(ev.p_value, 4)}` : "");
  document.getElementById("report-view").hidden = false;
  metrics(ev);
  moves(ev);
  document.getElementById("chart").closest("section").hidden = !ev.reranked;
  const rows = ev.per_query.map((q) => ({ ...q, change: q["ndcg@10"][1] === null ? 0 : q["ndcg@10"][1] - q["ndcg@10"][0] }));
  rows.sort((a, b) => b.change - a.change || a.id.localeCompare(b.id));
  chart(rows);
  queries(rows);
}

function metrics(ev) {
  const names = Object.keys(ev.first_stage);
  const head = el("tr", {}, el("th", {}, "metric"), el("th", {}, "first stage"), ev.reranked && [el("th", {}, "reranked"), el("th", {}, "change")]);
  const body = names.map((name) => {
    const a = ev.first_stage[name];
    const b = ev.reranked ? ev.reranked[name] : null;
    const change = b === null ? null : b - a;
    return el("tr", {}, el("td", {}, name), el("td", {}, fmt(a, 4)), ev.reranked && [
      el("td", {}, fmt(b, 4)), el("td", { class: change > 0 ? "up" : change < 0 ? "down" : "" }, (change >= 0 ? "+" : "") + fmt(change, 4))]);
  });
  document.getElementById("metrics").replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
}

function moves(ev) {
  const { buckets, matrix, missed } = ev.moves;
  const target = document.getElementById("moves");
  if (!ev.reranked) return target.replaceChildren("No reranker: nothing moved.");
  const most = Math.max(1, ...matrix.flat());
  const head = el("tr", {}, el("th", {}, "first \\ reranked"), buckets.map((b) => el("th", {}, b)));
  const rows = matrix.map((row, i) => el("tr", {}, el("th", {}, buckets[i]), row.map((count, j) => {
    const shade = count ? 0.12 + 0.7 * Math.log1p(count) / Math.log1p(most) : 0;
    return el("td", {
      class: i === j ? "diagonal" : null,
      style: `background: rgba(47, 95, 179, ${shade.toFixed(2)}); color: ${shade > 0.5 ? "#fff" : "inherit"}`,
      title: `${count} relevant document(s) from first-stage rank ${buckets[i]} to reranked rank ${buckets[j]}`,
    }, count);
  })));
  target.replaceChildren(
    el("table", { class: "matrix" }, el("thead", {}, head), el("tbody", {}, rows)),
    el("p", { class: "legend" }, `Rows: rank in the first stage; columns: rank after reranking. Left of the diagonal moved up. ${missed} relevant document(s) were not among the ${ev.candidates} candidates.`),
  );
}

function chart(rows) {
  const svg = document.getElementById("chart");
  svg.replaceChildren();
  const width = Math.max(rows.length, 1);
  const most = Math.max(1e-9, ...rows.map((r) => Math.abs(r.change)));
  svg.setAttribute("viewBox", `0 0 ${width} 2`);
  svg.setAttribute("preserveAspectRatio", "none");
  const axis = document.createElementNS(SVGNS, "line");
  Object.entries({ x1: 0, x2: width, y1: 1, y2: 1, stroke: "#1d2330", "stroke-width": 0.01 }).forEach(([k, v]) => axis.setAttribute(k, v));
  svg.append(axis);
  rows.forEach((row, i) => {
    const h = Math.abs(row.change) / most || 0.02;
    const bar = document.createElementNS(SVGNS, "rect");
    const kind = row.change > 0 ? "up" : row.change < 0 ? "down" : "same";
    const attrs = { x: i, width: 0.9, y: row.change > 0 ? 1 - h : 1, height: h, class: `bar ${kind}`, tabindex: 0, "data-q": row.id };
    Object.entries(attrs).forEach(([k, v]) => bar.setAttribute(k, v));
    const title = document.createElementNS(SVGNS, "title");
    title.textContent = `${row.query}: ${row.change >= 0 ? "+" : ""}${row.change.toFixed(3)}`;
    bar.append(title);
    for (const event of ["mouseenter", "focus"]) bar.addEventListener(event, () => detail(row));
    svg.append(bar);
  });
}

function queries(rows) {
  const body = rows.map((row) => {
    const tr = el("tr", { class: "query-row", tabindex: 0, "data-q": row.id },
      el("td", { lang: langOf(row.query) }, row.query), el("td", {}, fmt(row["ndcg@10"][0])), el("td", {}, fmt(row["ndcg@10"][1])),
      el("td", { class: row.change > 0 ? "up" : row.change < 0 ? "down" : "" }, (row.change >= 0 ? "+" : "") + fmt(row.change)));
    for (const event of ["mouseenter", "focus"]) tr.addEventListener(event, () => detail(row));
    return tr;
  });
  const head = el("tr", {}, el("th", {}, "query"), el("th", {}, "first"), el("th", {}, "reranked"), el("th", {}, "change"));
  document.getElementById("queries").replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
}

function detail(row) {
  for (const node of document.querySelectorAll(".active[data-q]")) node.classList.remove("active");
  for (const node of document.querySelectorAll(`[data-q="${CSS.escape(row.id)}"]`)) node.classList.add("active");
  const list = (ids) => el("ol", {}, ids.map((id) => {
    const grade = own(row.relevant, id) ? row.relevant[id] : 0;
    const label = own(report.labels, id) ? String(report.labels[id]) : id;
    return el("li", { class: grade ? "relevant" : null, lang: langOf(label), title: id }, label, grade ? ` ✓ relevant (${grade})` : "");
  }));
  document.getElementById("detail").replaceChildren(
    el("p", { lang: langOf(row.query) }, el("strong", {}, row.query), ` — nDCG@10 ${fmt(row["ndcg@10"][0])} → ${fmt(row["ndcg@10"][1])}`),
    el("div", { class: "two" },
      el("div", {}, el("h3", {}, "First stage, top 10"), list(row.first_stage)),
      el("div", {}, el("h3", {}, "Reranked, top 10"), row.reranked.length ? list(row.reranked) : "not reranked")),
  );
}

start();
