"""Evaluations rendered for people: a terminal table, a Markdown report, a PNG figure, and the
results page that ``finerank eval --all`` writes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .evaluate import BUCKET_NAMES, Evaluation, dropped, missed, move_matrix
from .metrics import METRICS, verdict


def table(ev: Evaluation) -> str:
    """Metrics of the first stage and the reranked list side by side, then the cost."""
    lines = [
        f"{ev.dataset} ({ev.split}): {_queries(ev)}; "
        f"top {ev.candidates} of {ev.first_stage}" + (f" reranked by {ev.reranker}" if ev.reranker else ""),
        f"{'metric':<11} {'first stage':>11}" + (f" {'reranked':>9} {'change':>8}" if ev.reranker else ""),
    ]
    first, reranked = ev.scores["first_stage"], ev.scores["reranked"]
    for name in METRICS:
        row = f"{name:<11} {first[name]:>11.4f}"
        if reranked:
            row += f" {reranked[name]:>9.4f} {reranked[name] - first[name]:>+8.4f}"
        lines.append(row)
    return "\n".join(lines + _findings(ev))


def _findings(ev: Evaluation) -> list[str]:
    """The significance test and the cost, one line each."""
    lines = []
    if ev.p_value is not None:
        lines.append(f"paired randomization test on per-query nDCG@10 (10,000 trials): p = {ev.p_value:.4f}")
        gain = ev.scores["reranked"]["ndcg@10"] - ev.scores["first_stage"]["ndcg@10"]
        lines.append(verdict(len(ev.per_query["reranked"]["ndcg@10"]), gain, ev.gain_interval, ev.p_value))
    lines += [
        f"{stage} latency per query: p50 {t['p50']:.1f} ms, p95 {t['p95']:.1f} ms" for stage, t in ev.latency_ms.items()
    ]
    if ev.pairs_per_s:
        lines.append(f"rerank throughput: {ev.pairs_per_s:.1f} pairs/s; peak memory {ev.peak_rss_mb:.0f} MB")
    return lines


def markdown(ev: Evaluation, figure: str | None = None) -> str:
    """A Markdown report of one evaluation (with the figure linked, if one was written)."""
    first, reranked = ev.scores["first_stage"], ev.scores["reranked"]
    lines = [
        f"# {ev.dataset} ({ev.split})",
        "",
        f"- {_queries(ev)}",
        f"- first stage: {ev.first_stage}, top {ev.candidates}",
        f"- reranker: {ev.reranker or 'none'}",
        "- nDCG@10 uses trec_eval's linear gain; relevant documents the first stage missed count as misses.",
        "",
        "| metric | first stage |" + (" reranked | change |" if reranked else ""),
        "|---|---|" + ("---|---|" if reranked else ""),
    ]
    for name in METRICS:
        lines.append(
            f"| {name} | {first[name]:.4f} |"
            + (f" {reranked[name]:.4f} | {reranked[name] - first[name]:+.4f} |" if reranked else "")
        )
    lines += [""] + [f"- {line}" for line in _findings(ev)]
    if ev.moves:
        lines += [
            "",
            "Where relevant documents moved (rows: first-stage rank, columns: reranked rank):",
            "",
            _moves_markdown(ev),
        ]
    if figure:
        lines += ["", f"![per-query change and moves]({figure})"]
    return "\n".join(lines) + "\n"


def _queries(ev: Evaluation) -> str:
    evaluated = (
        f"{ev.queries} judged queries"
        if ev.queries == ev.judged
        else f"the first {ev.queries} of {ev.judged} judged queries"
    )
    return f"{evaluated} ({ev.skipped} skipped: no relevant judgement in this split)"


def _moves_markdown(ev: Evaluation) -> str:
    matrix = move_matrix(ev)
    names = BUCKET_NAMES[: len(matrix)]
    lines = ["| first \\ reranked | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(names, matrix)]
    lines.append(f"\n{missed(ev)} relevant document(s) were not among the first stage's {ev.candidates} candidates.")
    if dropped(ev):
        lines.append(
            f"{dropped(ev)} were among them but not in the reranked list: the cascade's cheap stage did not keep them."
        )
    return "\n".join(lines)


def figure(ev: Evaluation, path: str | Path) -> Path:
    """A PNG: per-query nDCG@10 change (sorted), and where relevant documents moved."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from .errors import MissingDependencyError

        raise MissingDependencyError("matplotlib (for the figure)", "report") from None
    if ev.per_query["reranked"] is None:
        raise ValueError("a figure needs a reranked result (the evaluation ran without a reranker)")
    first, reranked = ev.per_query["first_stage"]["ndcg@10"], ev.per_query["reranked"]["ndcg@10"]
    change = np.sort(np.array([reranked[q] - first[q] for q in first]))[::-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    colors = np.where(change > 0, "#2a9d8f", np.where(change < 0, "#e76f51", "#999999"))
    left.bar(np.arange(len(change)), change, color=colors, width=1.0)
    left.axhline(0, color="black", linewidth=0.8)
    better, worse = int((change > 0).sum()), int((change < 0).sum())
    left.set_title(
        f"{ev.dataset}: nDCG@10 change per query (reranked - first stage)\n{better} better, {worse} worse, "
        f"{len(change) - better - worse} same; mean {change.mean():+.4f}, p = {ev.p_value:.4f}"
    )
    left.set_xlabel("queries, sorted by change")
    left.set_ylabel("nDCG@10 change")
    matrix = move_matrix(ev)
    right.imshow(np.log1p(matrix), cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        right.text(
            j, i, str(v), ha="center", va="center", fontsize=8, color="black" if v < matrix.max() / 2 else "white"
        )
    names = BUCKET_NAMES[: len(matrix)]
    right.set_xticks(range(len(names)), names)
    right.set_yticks(range(len(names)), names)
    right.set_xlabel("rank after reranking")
    right.set_ylabel("first-stage rank")
    right.set_title(f"where relevant documents moved (below the diagonal: up)\n{missed(ev)} missed by the first stage")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(evaluations: Sequence[Evaluation], out: Path, command: str) -> None:
    """Write the results page, with one section and one figure (beside it) per dataset."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sections = []
    for ev in evaluations:
        name = None
        if ev.scores["reranked"]:
            name = f"{out.stem}-{ev.dataset}.png"
            figure(ev, out.parent / name)
        sections.append(markdown(ev, name).replace("# ", "## ", 1))
    out.write_text(results_page(evaluations, command) + "\n" + "\n".join(sections), encoding="utf-8")


def results_page(evaluations: Sequence[Evaluation], command: str) -> str:
    """The Markdown results page over several datasets."""
    lines = [
        "# Results",
        "",
        f"Produced by `{command}`. nDCG@10 uses trec_eval's linear gain; relevant documents a first",
        "stage missed count as misses. Latency is per query on the project's 2-core CPU.",
        "",
        "| dataset | queries | first stage | reranker | nDCG@10 first | nDCG@10 reranked | change | p "
        "| Hit@1 | Hit@3 | Recall@100 | rerank p50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ev in evaluations:
        f, r = ev.scores["first_stage"], ev.scores["reranked"]
        if r:
            lines.append(
                f"| {ev.dataset} | {ev.queries} | {ev.first_stage} | {ev.reranker} | {f['ndcg@10']:.4f} | "
                f"{r['ndcg@10']:.4f} | "
                f"{r['ndcg@10'] - f['ndcg@10']:+.4f} | {ev.p_value:.4f} | {f['hit@1']:.3f} → {r['hit@1']:.3f} | "
                f"{f['hit@3']:.3f} → {r['hit@3']:.3f} | {f['recall@100']:.4f} | "
                f"{ev.latency_ms['rerank']['p50']:.0f} |"
            )
        else:
            lines.append(
                f"| {ev.dataset} | {ev.queries} | {ev.first_stage} | none | {f['ndcg@10']:.4f} | – | – | – | "
                f"{f['hit@1']:.3f} | {f['hit@3']:.3f} | {f['recall@100']:.4f} | – |"
            )
    return "\n".join(lines) + "\n"
