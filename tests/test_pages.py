"""The search and evaluation pages in a real browser: Debian's Chromium driven by Playwright
(no browser download), against the real server, index and model on a loopback port.

Set FINERANK_SCREENSHOTS=DIR to keep the desktop and narrow screenshots (docs/pages.md)."""

import json
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from support import LiveServer

from finerank import Document, Index, load_reranker, read_corpus, read_run
from finerank.analysis import english
from finerank.evaluate import evaluate, load_dataset
from finerank.registry import load_encoder
from finerank.server import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as the machine's notes say: without the background-networking flags Chromium keeps trying to reach the outside
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "page-key"
DL19 = "trec-dl-2019-passage-pool"
QUERY = "vitamin D deficiency and bone fractures"
RUSSIAN = "Как быстро выучить иностранный язык?"
CHINESE = "如何治疗感冒？"

if not Path(CHROMIUM).is_file():
    if os.environ.get("CI"):
        raise RuntimeError(f"no Chromium at {CHROMIUM}: .ci/run installs Debian's chromium package")
    pytest.skip("no Chromium here (apt-get install chromium fonts-wqy-microhei)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def report(tmp_path_factory, datasets):
    """A real evaluation saved as `finerank eval --json` writes it: 4 DL19 queries, official BM25 run."""
    dataset = load_dataset(datasets / DL19, max_queries=4)
    documents = {d.id: d for d in read_corpus(datasets / DL19)}
    ev = evaluate(
        dataset,
        read_run(datasets / DL19 / "runs" / "BM25.top100.trec"),
        load_reranker("minilm-fused"),
        documents=documents,
        candidates=30,
    )
    path = tmp_path_factory.mktemp("report") / "dl19.json"
    path.write_text(json.dumps(ev.to_json()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, scifact_docs, report):
    demo = list(read_corpus(Path(__file__).parents[1] / "src" / "finerank" / "data" / "demo.jsonl"))
    path = tmp_path_factory.mktemp("page-index") / "idx"
    # emoji and a CJK character beyond the Basic Plane count as two units in JavaScript, one in Python
    tricky = Document("tricky-1", "🧪🎉 Zebrafish 𠀀 fins regrow 🎉 through a blastema.", "Fin regeneration 🐟")
    Index.build(demo + scifact_docs[:150] + [tricky], encoder=load_encoder("all-minilm-l6-v2")).save(path)
    with LiveServer(
        create_app("auto", index=path, api_key=KEY, reports=[report])
    ) as live:  # the default: zh -> e5, other -> MiniLM
        live.index = path
        yield live


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A fresh page (desktop size) that records console errors and failed requests."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.problems = []
    opened.on("console", lambda m: m.type == "error" and opened.problems.append(m.text))
    opened.on("pageerror", lambda e: opened.problems.append(str(e)))
    opened.on("requestfailed", lambda r: opened.problems.append(f"failed: {r.url}"))
    yield opened
    context.close()


def enter_key(page):
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#key", KEY)
    page.press("#key", "Enter")


def api_search(server, **body) -> dict:
    response = httpx.post(f"{server.url}/v1/search", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def shot(page, name):
    if os.environ.get("FINERANK_SCREENSHOTS"):
        page.screenshot(path=str(Path(os.environ["FINERANK_SCREENSHOTS"]) / name), full_page=True)


def test_a_query_shows_both_rankings_joined_by_lines(server, page):
    page.goto(server.url + "/")
    enter_key(page)  # the page itself is open; the API asks for the key
    page.wait_for_selector("#first-stage option", state="attached")
    assert page.locator("#first-stage option").all_inner_texts() == ["bm25", "dense", "hybrid"]
    page.fill("#query", QUERY)
    page.press("#query", "Enter")
    page.wait_for_selector("#reranked-list .hit")
    expected = api_search(server, query=QUERY, top_n=10, candidates=100, first_stage="bm25")
    first_ids = page.locator("#first-list .hit").evaluate_all("nodes => nodes.map(n => n.dataset.id)")
    reranked_ids = page.locator("#reranked-list .hit").evaluate_all("nodes => nodes.map(n => n.dataset.id)")
    assert first_ids == [h["id"] for h in expected["first_stage_results"]]
    assert reranked_ids == [h["id"] for h in expected["results"]]
    assert "?q=vitamin+D" in page.url  # the address reopens this search

    # every document shown gets a line; a moved one is drawn from its first-stage card to its reranked card
    assert page.locator("#lines path").count() == len(set(first_ids) | set(reranked_ids))
    moved = next(h for h in expected["results"] if h["id"] in first_ids and h["rank"] != h["original_rank"])
    line = page.locator(f'#lines path[data-id="{moved["id"]}"]')
    assert line.get_attribute("class").split()[1] == ("up" if moved["rank"] < moved["original_rank"] else "down")
    y1, y2 = map(float, re.match(r"M0,([\d.]+) .* [\d.]+,([\d.]+)$", line.get_attribute("d")).groups())
    svg_top = page.locator("#lines").bounding_box()["y"]
    for list_id, y in (("first-list", y1), ("reranked-list", y2)):
        card = page.locator(f'#{list_id} .hit[data-id="{moved["id"]}"]').bounding_box()
        assert card["y"] < svg_top + y < card["y"] + card["height"]
    card = page.locator(f'#reranked-list .hit[data-id="{moved["id"]}"]')
    assert f"was #{moved['original_rank']}" in card.inner_text()
    model = moved["model_score"]  # a probability only from a calibrated model
    shown = (
        f"p(relevant) {model['calibrated']:.3f} (raw {model['raw']:.3f})"
        if model["probability"]
        else (f"model {model['raw']:.3f} (uncalibrated)")
    )
    assert shown in card.inner_text()
    marks = card.locator("mark").all_inner_texts()
    assert marks and all(set(english(m)) & set(english(QUERY)) for m in marks)  # query words, by stem
    assert "first stage" in page.inner_text("#status") and "rerank" in page.inner_text("#status")

    # by keyboard: tabbing onto a card marks it and its twin in the other column
    page.focus(f'#first-list .hit[data-id="{moved["id"]}"]')
    assert page.locator(f'.hit.active[data-id="{moved["id"]}"]').count() == 2
    assert page.locator(f'#lines path.active[data-id="{moved["id"]}"]').count() == 1
    shot(page, "page-search.png")
    assert page.problems == []


def test_judging_with_the_keyboard_two_judges_at_once_and_a_reload(server, browser, tmp_path):
    """Two judges in two browser contexts grade the pooled results of one query with the keyboard
    alone (a digit grades the focused result, arrows move); nothing is lost, a reload shows every
    grade, and the page says what still needs one."""
    from urllib.parse import quote

    from finerank.judgments import Judgments

    query = "zebrafish fin regeneration blastema"
    headers = {"Authorization": f"Bearer {KEY}"}
    pooled = httpx.post(f"{server.url}/v1/judgments/pool", json={"query": query, "depth": 5}, headers=headers)
    ids = [r["id"] for r in pooled.json()["results"]]
    assert len(ids) >= 5
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(2)]
    ann, bob = (c.new_page() for c in contexts)
    for judge in (ann, bob):
        judge.goto(f"{server.url}/?q={quote(query)}&top_n=5")
        enter_key(judge)
        judge.wait_for_selector("#judging:not([hidden])")
        assert judge.locator(".hit.ungraded").count() >= len(ids)  # a document in both lists has two cards

    def card(judge, doc_id):
        for column in ("reranked-list", "first-list"):
            found = judge.locator(f'#{column} .hit[data-id="{doc_id}"]')
            if found.count():
                return found

    def grade(judge, doc_id, key):
        judge.keyboard.press(key)
        judge.wait_for_selector(f'.hit[data-id="{doc_id}"][data-grade="{key}"]')

    card(ann, ids[0]).focus()
    grade(ann, ids[0], "3")  # focus moves on to the next result without a grade: ids[1]
    card(bob, ids[1]).focus()
    grade(bob, ids[1], "2")
    ann.keyboard.press("ArrowDown")  # from ids[1] (bob's) to ids[2]
    grade(ann, ids[2], "0")
    card(bob, ids[3]).focus()
    grade(bob, ids[3], "1")
    ann.keyboard.press("ArrowUp")  # back from ids[3] to ids[2], regraded
    assert ann.evaluate("document.activeElement.dataset.id") == ids[2]
    grade(ann, ids[2], "1")
    expected = {ids[0]: 3, ids[1]: 2, ids[2]: 1, ids[3]: 1}
    assert Judgments.of_index(server.index).grades()[query] == expected
    ann.reload()
    ann.wait_for_selector("#judging:not([hidden])")
    for doc_id, value in expected.items():
        assert card(ann, doc_id).get_attribute("data-grade") == str(value)
        pressed = card(ann, doc_id).locator('.grades button[aria-pressed="true"]')
        assert pressed.get_attribute("data-grade") == str(value)
    assert ann.locator("#to-grade").inner_text() == f"{len(ids) - 4} of {len(ids)} results still need a grade."
    for context in contexts:
        context.close()


def test_the_page_names_the_language_its_analysis_and_its_route(server, page):
    """A Russian query over the demo's Russian documents: BM25 read it as Russian (its stems mark
    the matching words), e5-fused reranked it; an English one went to minilm-fused."""
    page.goto(f"{server.url}/?q={RUSSIAN}&top_n=5")
    enter_key(page)
    page.wait_for_selector("#reranked-list .hit")
    assert "auto (ru)" in page.inner_text("#first-name")
    assert page.inner_text("#reranked-name") == "e5-fused · route for ru queries"
    assert page.locator("#reranked-list .hit").first.get_attribute("data-id") == "ru-2"
    assert {"выучить", "иностранный", "язык"} <= set(
        page.locator("#reranked-list .hit").first.locator("mark").all_inner_texts()
    )
    shot(page, "page-search-russian.png")
    assert api_search(server, query=QUERY, top_n=3)["reranker"] == "minilm-fused"
    assert api_search(server, query=QUERY, top_n=3)["analysis"] == "auto (en)"
    assert page.problems == []


def test_an_address_with_a_chinese_query_runs_it_on_a_narrow_screen(server, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    problems = []
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.goto(f"{server.url}/?q={CHINESE}&top_n=5&first_stage=hybrid&candidates=20")  # e5 reads 20 texts, not 100
    enter_key(page)
    page.wait_for_selector("#reranked-list .hit")
    expected = api_search(server, query=CHINESE, top_n=5, candidates=20, first_stage="hybrid")
    assert page.input_value("#query") == CHINESE and page.input_value("#first-stage") == "hybrid"
    first = page.locator("#first-list .hit").first
    assert first.get_attribute("lang") == "zh"
    assert expected["first_stage_results"][0]["document"]["text"] in first.inner_text().replace("…", "")
    assert "感冒" in first.locator("mark").all_inner_texts()
    # both columns fit side by side: nothing scrolls sideways
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
    boxes = [page.locator(f"#{c}").bounding_box() for c in ("first-column", "reranked-column")]
    assert boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"] and boxes[1]["x"] + boxes[1]["width"] <= 390
    shot(page, "page-search-narrow.png")
    context.close()
    assert problems == []


def test_marks_fall_on_the_query_words_after_emoji(server, page):
    page.goto(f"{server.url}/?q=zebrafish blastema&top_n=5")
    enter_key(page)
    card = page.locator('#first-list .hit[data-id="tricky-1"]')
    card.wait_for()
    assert card.locator("mark").all_inner_texts() == ["Zebrafish", "blastema"]
    assert "🧪🎉 Zebrafish 𠀀 fins regrow 🎉 through a blastema." in card.inner_text()
    assert page.problems == []


def test_the_evaluation_page_renders_a_saved_report(server, page, report):
    saved = json.loads(report.read_text())
    page.goto(server.url + "/eval")
    enter_key(page)
    page.wait_for_selector(".bar")
    cells = page.locator(".matrix tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.querySelectorAll('td')].map(c => Number(c.textContent)))"
    )
    assert cells == saved["moves"]["matrix"]
    assert page.locator(".bar").count() == len(saved["per_query"])
    ndcg = page.locator("#metrics tbody tr").first.locator("td").all_inner_texts()
    assert ndcg[:3] == ["ndcg@10", f"{saved['first_stage']['ndcg@10']:.4f}", f"{saved['reranked']['ndcg@10']:.4f}"]
    # hovering a query's bar shows its two rankings, relevant documents marked
    best = max(saved["per_query"], key=lambda q: (q["ndcg@10"][1] - q["ndcg@10"][0], q["id"]))
    page.hover(f'.bar[data-q="{best["id"]}"]')
    detail = page.locator("#detail")
    assert best["query"] in detail.inner_text()
    relevant_shown = detail.locator("div.two > div").nth(1).locator("li.relevant").count()
    assert relevant_shown == sum(1 for d in best["reranked"] if d in best["relevant"])
    # the same report opened from a file on the user's machine
    page.set_input_files("#file", str(report))
    page.wait_for_function(f"document.querySelectorAll('.bar').length === {len(saved['per_query'])}")
    assert page.input_value("#report") == "file:0"
    shot(page, "page-eval.png")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing scrolls sideways
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
    assert page.problems == []


def test_pages_load_nothing_from_elsewhere(server):
    pages = Path(__file__).parents[1] / "src" / "finerank" / "server" / "pages"
    for file in pages.iterdir():
        text = file.read_text(encoding="utf-8")
        for reference in re.findall(r'(?:src|href)="([^"]*)"', text) + re.findall(r"url\(([^)]*)\)", text):
            assert reference.startswith(("/", "data:", "#")), (file.name, reference)
        assert not re.search(r"""fetch\(\s*["'`]https?:|@import|https?://(?!www\.w3\.org/2000/svg)""", text), file.name
    for route in ("/", "/eval", "/static/search.js", "/static/eval.js", "/static/common.js", "/static/style.css"):
        assert httpx.get(server.url + route).status_code == 200  # open without the key
    assert httpx.get(server.url + "/v1/info").status_code == 401
