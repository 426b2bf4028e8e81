"""The reproduction table (issue 11): each paper's headline claim measured on pile22 and on the
real-LM task, against natural and uniform, with a verdict; and the rank correlation between
the agents' order on the toy and on the real model.

    mixgym bench benchmarks/configs/pile22.yaml --out runs/pile22 --workers 2
    mixgym bench benchmarks/configs/pile22-proxy.yaml --out runs/pile22-proxy --workers 2
    mixgym bench benchmarks/configs/hf-pile.yaml --out runs/hf-pile --workers 2
    python benchmarks/reproduce.py runs/pile22 runs/pile22-proxy runs/hf-pile \\
        --toy runs/pile22 --lm runs/hf-pile --out benchmarks/results/reproduction.md

Every grid given is measured (`mixgym.bench.reproduce.CLAIMS`: steps saved against the claim's
reference, with a 90% bootstrap interval over seeds, against natural and uniform, final loss,
mixture distance from uniform, verdict) on the papers' objective (``--objective``, default
domain-mean). ``--toy`` and ``--lm`` name the two grids whose agents' orders are correlated
(Spearman, for every objective); PNGs of the final losses relative to uniform (every grid,
every objective) and of the ranks go beside the report.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from mixgym.bench.reproduce import Grid, claims_markdown, measure_all, plot_finals, plot_ranks, spearman, spearman_markdown
from mixgym.llm_backend.objectives import OBJECTIVES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grids", nargs="+", help="finished `mixgym bench` output folders")
    parser.add_argument("--toy", help="the toy grid of the rank correlation")
    parser.add_argument("--lm", help="the real-LM grid of the rank correlation")
    parser.add_argument("--objective", default="domain-mean", choices=OBJECTIVES, help="objective of the claims")
    parser.add_argument("--out", default="benchmarks/results/reproduction.md", help="the Markdown report")
    args = parser.parse_args(argv)
    grids = [Grid.load(path) for path in args.grids]
    command = " ".join(["python benchmarks/reproduce.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Reproducing the papers' claims (issue 11)",
        "",
        f"`{command}`, {date.today().isoformat()}. Objective: {args.objective}. Grids: "
        + ", ".join(f"{g.name} ({g.table['seed'].nunique()} seeds)" for g in grids)
        + ".",
        "",
        claims_markdown(measure_all(grids, args.objective)),
    ]
    out = Path(args.out)
    finals = plot_finals(grids, OBJECTIVES, out.with_name(out.stem + "-finals.png"))
    lines += [f"Final loss of every agent relative to uniform, per seed, on {', '.join(OBJECTIVES)}:", "", f"![finals]({finals.name})", ""]
    if args.toy and args.lm:
        toy, lm = Grid.load(args.toy), Grid.load(args.lm)
        lines += [f"## Does {toy.name} rank the agents as {lm.name} does?", ""]
        for objective in OBJECTIVES:
            correlation = spearman(toy, lm, objective)
            lines += [f"### {objective}", "", spearman_markdown(correlation, toy.name, lm.name)]
            if objective == args.objective:
                figure = plot_ranks(correlation, toy.name, lm.name, out.with_name(out.stem + "-ranks.png"))
                lines += [f"![ranks]({figure.name})", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
