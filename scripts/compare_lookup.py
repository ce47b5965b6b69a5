"""Prompt lookup side by side: picospec with lookup on and off and ar, on one local cloud behind the
default link (edge on core 0, cloud on core 1, as `picospec generate` runs them), per prompt.

    PYTHONPATH=. python scripts/compare_lookup.py [--max-tokens 128] [--repeats 1] [generate's flags]

Prints one JSON line per run and a table of tokens/s ratios against ar (after the first token,
and with it). Temperature 0 unless --temperature says otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics

from picospec.app import DEMO_PROMPT, add_generation_args, cloud_context, load_drafter, run_one
from picospec.edge.config import Method

FUNCTION = '''def merge_intervals(intervals, min_gap=0):
    if not intervals:
        return []
    ordered = sorted(intervals, key=lambda pair: pair[0])
    merged = [list(ordered[0])]
    for start, end in ordered[1:]:
        last = merged[-1]
        if start <= last[1] + min_gap:
            last[1] = max(last[1], end)
        else:
            merged.append([start, end])
    return [tuple(pair) for pair in merged]


def total_covered(intervals, min_gap=0):
    total = 0
    for start, end in merge_intervals(intervals, min_gap):
        total += end - start
    return total


def find_gaps(intervals, lower, upper):
    gaps = []
    cursor = lower
    for start, end in merge_intervals(intervals):
        if start > cursor:
            gaps.append((cursor, min(start, upper)))
        cursor = max(cursor, end)
        if cursor >= upper:
            break
    if cursor < upper:
        gaps.append((cursor, upper))
    return gaps
'''
PROMPTS = {
    "edit": "Add type hints and a docstring to each of these functions. Reply with the whole code only.\n\n" + FUNCTION,
    "rename": "Rename `merge_intervals` to `coalesce` everywhere in this code. Reply with the whole code only.\n\n" + FUNCTION,
    "demo": DEMO_PROMPT,
    "chat": "What are the main differences between renting and buying a home? Give practical advice.",
}
VARIANTS = {"ar": (Method.AR, False), "lookup": (Method.PICOSPEC, True), "no-lookup": (Method.PICOSPEC, False)}


def after_first(report) -> float:
    """Tokens per second after the first token."""
    return (report.new_tokens - 1) / max(1e-9, report.wall_s - (report.ttft_s or 0.0))


def main() -> None:
    parser = argparse.ArgumentParser()
    add_generation_args(parser)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--prompts", default=",".join(PROMPTS))
    args = parser.parse_args()
    rows: dict[tuple[str, str], list] = {}
    with cloud_context(args) as local:
        runner = load_drafter(args)
        for _ in range(args.repeats):
            for name in args.prompts.split(","):
                for variant, (method, lookup) in VARIANTS.items():
                    run_args = argparse.Namespace(**{**vars(args), "prompt": PROMPTS[name], "lookup": lookup})
                    report = run_one(run_args, runner, method, local.address)
                    rows.setdefault((name, variant), []).append(report)
                    print(json.dumps({"prompt": name, "variant": variant, "tokens_per_s": report.tokens_per_s,
                                      "after_first": after_first(report), "ttft_s": report.ttft_s, "rounds": report.rounds,
                                      "mean_accepted": report.mean_accepted, "decoded": report.decoded,
                                      "drafted": report.drafted, "looked_up": report.looked_up,
                                      "lookup_accepted": report.lookup_accepted, "switches": report.mode_switches,
                                      "new_tokens": report.new_tokens}), flush=True)  # fmt: skip
    print("prompt  variant     x ar (after 1st)  x ar (with ttft)  rounds  mean acc  lookup acc/drafted")
    for name in args.prompts.split(","):
        for variant in VARIANTS:
            runs, ar = rows[(name, variant)], rows[(name, "ar")]
            ratio = statistics.median(after_first(r) / after_first(a) for r, a in zip(runs, ar))
            ratio_ttft = statistics.median(r.tokens_per_s / a.tokens_per_s for r, a in zip(runs, ar))
            last = runs[-1]
            print(f"{name:7} {variant:10} {ratio:16.2f}  {ratio_ttft:16.2f}  {last.rounds:6}  {last.mean_accepted:8.2f}  "
                  f"{last.lookup_accepted}/{last.looked_up}")


if __name__ == "__main__":
    main()
