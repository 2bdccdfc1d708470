"""Turn an ``lsr eval`` results folder into the README's BEIR table (Markdown, on stdout).

    .venv/bin/python scripts/beir_report.py results/                 # every data set under results/
    .venv/bin/python scripts/beir_report.py results/ --metrics ndcg@10,recall@100

One row per data set and system (our modes, then the baselines), the average row when there are several
data sets, then the Lucene impact cross-check and the provenance of each run (commit, machine, wall time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_results(folder: Path) -> list[dict]:
    """Every ``<data set>/metrics.json`` under ``folder``, by data set name."""
    files = sorted(folder.glob("*/metrics.json")) or sorted(folder.glob("metrics.json"))
    if not files:
        raise SystemExit(f"beir_report: no */metrics.json under {folder}")
    return [json.loads(f.read_text()) for f in files]


def cross_check_table(results: list[dict]) -> str:
    rows = ["| data set | ours exact nDCG@10 | Lucene impact nDCG@10 | difference | top-10 overlap | "
            "identical top-10 |", "|---|---|---|---|---|---|"]
    for r in results:
        c = r.get("cross_check")
        if c:
            rows.append(f"| {r['dataset']['name']} | {c['ours_exact_ndcg@10']:.4f} | "
                        f"{c['lucene_impact_ndcg@10']:.4f} | {c['ndcg@10_difference']:+.4f} | "
                        f"{c['top10_overlap']:.4f} | {c['top10_identical_share']:.1%} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def provenance(results: list[dict]) -> str:
    lines = []
    for r in results:
        m, lsr = r["machine"], r["lsr"]
        commit = (lsr.get("commit") or "unknown")[:10] + (" (dirty)" if lsr.get("dirty") else "")
        lines.append(f"- {r['dataset']['name']}: lsr {lsr['lsr-engine']} at {commit}, {m['cores']} cores "
                     f"({m['cpu']}), GPU {m['gpu'] or 'none'}, {r['settings']['threads']} search threads, "
                     f"{r['dataset']['queries']} {r['dataset']['split']} queries, index "
                     f"{'reused' if r['index']['cached'] else 'built in the run'}, "
                     f"wall {r['wall_seconds']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    from lsr.eval import markdown_table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="the --out folder of lsr eval")
    ap.add_argument("--metrics", default=None, help="comma list (default: the metrics of the run)")
    a = ap.parse_args(argv)
    results = load_results(a.results)
    metrics = a.metrics.split(",") if a.metrics else None
    print(markdown_table(results, metrics))
    cross = cross_check_table(results)
    if cross:
        print("\nLucene impact search over our exported SPLADE vectors (same integer impacts):\n")
        print(cross)
    print()
    print(provenance(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
