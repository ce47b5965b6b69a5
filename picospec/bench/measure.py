"""What each step of the protocol costs, measured from the benchmark's own runs.

Nothing here runs a micro-benchmark: every number comes out of the RunRecords, so the bound and
the simulator describe the very machine, models and settings that produced the measurements.

Where each number comes from:
- draft_s: mean duration of the edge's "draft" timeline events (one drafter pass and a sample),
  and per method: a pipelined edge drafts while its own gRPC and link threads share its core,
  and an edge-only run decodes with nothing else on it ((wall - ttft) / (n - 1)).
- verify(m): cloud seconds of one verification pass that evaluates m tokens. A chunk of n draft
  tokens evaluates m = n + 1 tokens when the round before it committed a token (a correction, or
  a stop-and-wait bonus: the cloud evaluates it at the head of the next pass) or the cloud
  decoded tokens since (the controller's fallback: the last one is evaluated so), and m = n
  otherwise (the first chunk, or a pipelined chunk after a fully accepted one, whose first row
  the cloud kept). Per-m medians of the recorded verify_times, and a least-squares line a + b*m
  for the m never observed.
- target_s: mean per-token compute of ar runs (their verify_times after the first); decode
  overhead: the median over ar runs of their time per token after the first, (wall - ttft) /
  (n - 1), less that compute (the session loop, gRPC, the edge's receipt).
- cloud prefill: the cloud's prompt pass as each session reported it (protocol v2; older
  results: an ar run's first compute time, the prompt pass that also yields token 1).
- edge prefill: the drafter's prompt pass (its "prompt" timeline event; results from before it
  was recorded: when a fixed-policy run's first draft starts), or an edge-only run's time to
  first token.
- message bytes per verify mode: uplink bytes per draft token and downlink bytes per round (from
  the runs' byte counters), ar's downlink bytes per token.
- round overhead: what a stop-and-wait round takes beyond drafting, the link model and the
  cloud's compute (gRPC and its flow control, the link emulator, parsing and encoding, which
  full mode's 300 KB rows make costly): the median over rounds of verdict arrival - ship time -
  verify - rtt - serialisation, per verify mode, and over all modes for modes without
  stop-and-wait runs.

Costs drift as the machine's load changes, so besides one profile for a whole results file there
are two narrower ones: window_costs, one profile per network profile and temperature (the
benchmark serves each network from its own cloud, back to back: one stretch of time), and
run_costs, which puts a single run's own compute costs over a window's profile (replaying a run
with them tests the protocol model alone).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import replace
from typing import Iterable

from picospec.bench.compare import after_first_token_rate
from picospec.bench.costs import SPECULATIVE, STOP_AND_WAIT, CostProfile, VerifyCost
from picospec.bench.results import RunRecord
from picospec.edge.config import Method
from picospec.errors import InvalidInputError
from picospec.transport.netem import LinkProfile
from picospec.verify import VerifyMode


def evaluated_tokens(record: RunRecord) -> list[int]:
    """Tokens the cloud evaluated in each round's pass: the chunk, plus the token committed by the
    round before (correction or bonus), which the cloud evaluates at the head of the next pass."""
    bonus = record.key.method in STOP_AND_WAIT
    # Each verdict's arrival, and whether the cloud decoded tokens since the one before.
    decoded_before, decoded = [], False
    for event in sorted(record.timeline, key=lambda e: e["start"]):
        if event["kind"] == "decoded":
            decoded = True
        elif event["kind"] == "verdict":
            decoded_before.append(decoded)
            decoded = False
    if len(decoded_before) != len(record.chunk_lengths):  # results from before "decoded" events
        decoded_before = [False] * len(record.chunk_lengths)
    sizes, pending = [], False
    for accepted, length, decoded in zip(record.accepted_lengths, record.chunk_lengths, decoded_before):
        sizes.append(length + (pending or decoded))
        pending = accepted < length or bonus
    return sizes


def draft_durations(record: RunRecord) -> list[float]:
    """Seconds of each drafter step of a run: its draft events, or an edge-only run's mean step
    after the prompt pass (which yields its first token), once per step."""
    if record.key.method == Method.EDGE:
        n, ttft = record.summary["new_tokens"], record.summary.get("ttft_s")
        return [(record.summary["wall_s"] - ttft) / (n - 1)] * (n - 1) if n > 1 and ttft is not None else []
    return [e["end"] - e["start"] for e in record.timeline if e["kind"] == "draft"]


def measure_costs(records: Iterable[RunRecord], link: LinkProfile | None = None) -> CostProfile:
    """A CostProfile from benchmark runs; `link` defaults to the first networked run's."""
    records = list(records)
    speculative = [r for r in records if r.key.method in SPECULATIVE]
    ar = [r for r in records if r.key.method == Method.AR and r.verify_times]
    drafts = [d for r in speculative for d in draft_durations(r)]
    if not drafts:
        raise InvalidInputError("the results hold no speculative runs with draft events to measure costs from")
    by_method: dict[Method, list[float]] = defaultdict(list)
    for r in records:
        by_method[r.key.method] += draft_durations(r)
    verify = VerifyCost.fit([(m, s) for r in speculative for m, s in zip(evaluated_tokens(r), r.verify_times)])
    target = [s for r in ar for s in r.verify_times[1:]]
    cloud_prefill = _median_by_prompt((r.key.prompt, s) for r in records if (s := cloud_prefill_s(r)) is not None)
    edge_prefill = _median_by_prompt(_edge_prefills(records))
    if link is None:
        link = next(
            (LinkProfile(r.key.rtt_ms, r.key.bandwidth_mbps) for r in records if r.key.bandwidth_mbps > 0),
            LinkProfile(0.0, 1e6),
        )
    up, down = _message_bytes(speculative)
    ar_down = sum(r.summary["bytes_down"] for r in ar) / max(1, sum(r.summary["new_tokens"] for r in ar))
    partial = CostProfile(
        name="measured",
        draft_s=statistics.fmean(drafts),
        verify=verify,
        # Without ar runs, one token's verification is the best stand-in for a decode step.
        target_s=statistics.fmean(target) if target else verify(1),
        cloud_prefill_s=statistics.fmean(cloud_prefill.values()) if cloud_prefill else 0.0,
        edge_prefill_s=statistics.fmean(edge_prefill.values()) if edge_prefill else 0.0,
        link=link,
        bytes_up_per_draft_token=up,
        bytes_down_per_round=down,
        bytes_down_per_ar_token=ar_down,
        cloud_prefill_by_prompt=cloud_prefill,
        edge_prefill_by_prompt=edge_prefill,
        draft_s_by_method={method: statistics.fmean(d) for method, d in by_method.items() if d},
    )
    overall, by_mode = _round_overheads(speculative, partial)
    overheads = [s for r in ar if (s := decode_overhead_s(r)) is not None]
    decode_overhead = statistics.median(overheads) if overheads else 0.0
    return replace(partial, round_overhead_s=overall, round_overhead_by_mode=by_mode, decode_overhead_s=decode_overhead)


def decode_overhead_s(record: RunRecord) -> float | None:
    """An ar run's seconds per streamed token beyond the cloud's compute (None: too short to say)."""
    rate = after_first_token_rate(record)
    if record.key.method != Method.AR or rate <= 0 or record.summary.get("ttft_s") is None or len(record.verify_times) < 2:
        return None
    return max(0.0, 1.0 / rate - statistics.fmean(record.verify_times[1:]))


def window_costs(records: Iterable[RunRecord]) -> dict[tuple[str, float], CostProfile]:
    """One CostProfile per (network profile, temperature), from those runs and the edge-only ones
    at that temperature (which need no network, and are the only ones that measure edge-only
    decoding). The benchmark serves each network from its own cloud, back to back, so its runs
    share one stretch of the machine's time; a temperature run on another occasion gets its own
    window, and sampling has costs of its own."""
    records = list(records)
    networks = {
        (r.key.profile, r.key.temperature): LinkProfile(r.key.rtt_ms, r.key.bandwidth_mbps)
        for r in records
        if r.key.bandwidth_mbps > 0
    }
    windows = {}
    for (name, temperature), link in networks.items():
        runs = [
            r
            for r in records
            if r.key.temperature == temperature and (r.key.profile == name or r.key.bandwidth_mbps <= 0)
        ]
        windows[name, temperature] = measure_costs(runs, link)
    return windows


def run_costs(record: RunRecord, base: CostProfile) -> CostProfile:
    """`base` with the compute costs that `record` itself measured: its drafter step, its
    verification passes (per evaluated length; base's for lengths it never verified), its decode
    step (ar), and its prompt passes. Link, message sizes and round overheads stay base's."""
    method, prompt = record.key.method, record.key.prompt
    changes: dict = {}
    if drafts := draft_durations(record):
        changes["draft_s_by_method"] = {**base.draft_s_by_method, method: statistics.fmean(drafts)}
    if method in SPECULATIVE and record.verify_times:
        own = VerifyCost.fit(list(zip(evaluated_tokens(record), record.verify_times)))
        changes["verify"] = replace(base.verify, medians={**base.verify.medians, **own.medians})
    if method == Method.AR and len(record.verify_times) > 1:
        changes["target_s"] = statistics.fmean(record.verify_times[1:])
        changes["decode_overhead_s"] = decode_overhead_s(record)
    if (prefill := cloud_prefill_s(record)) is not None:
        changes["cloud_prefill_by_prompt"] = {**base.cloud_prefill_by_prompt, prompt: prefill}
    if edge := dict(_edge_prefills([record])):
        changes["edge_prefill_by_prompt"] = {**base.edge_prefill_by_prompt, **edge}
    return replace(base, **changes)


def cloud_prefill_s(record: RunRecord) -> float | None:
    """The cloud's prompt pass in a run, where it reported one."""
    reported = record.summary.get("cloud_prefill_s")
    if reported is None and record.key.method == Method.AR and record.verify_times:
        return record.verify_times[0]  # results from before protocol v2
    return reported


def _median_by_prompt(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for prompt, seconds in pairs:
        values[prompt].append(seconds)
    return {prompt: statistics.median(v) for prompt, v in values.items()}


def _edge_prefills(records: Iterable[RunRecord]) -> Iterable[tuple[str, float]]:
    for r in records:
        if r.key.method in SPECULATIVE:
            passes = [e["end"] - e["start"] for e in r.timeline if e["kind"] == "prompt"]
            # Before "prompt" events: the first draft's start, the pass's end where nothing else
            # comes first (not under the controller, whose first drafts follow cloud decoding).
            starts = [] if r.controlled else [e["start"] for e in r.timeline if e["kind"] == "draft"]
            if passes or starts:
                yield r.key.prompt, (passes or starts)[0]
        elif r.key.method == Method.EDGE and r.summary.get("ttft_s") is not None:
            yield r.key.prompt, r.summary["ttft_s"]


def _message_bytes(speculative: list[RunRecord]) -> tuple[dict[VerifyMode, float], dict[VerifyMode, float]]:
    """Mean uplink bytes per draft token and downlink bytes per round, by verify mode."""
    up: dict[VerifyMode, list[int]] = defaultdict(lambda: [0, 0])
    down: dict[VerifyMode, list[int]] = defaultdict(lambda: [0, 0])
    for r in speculative:
        s = r.summary
        up[r.key.verify][0] += s["bytes_up"]
        up[r.key.verify][1] += s["drafted"]
        down[r.key.verify][0] += s["bytes_down"]
        down[r.key.verify][1] += s["rounds"]
    return (
        {mode: b / max(1, n) for mode, (b, n) in up.items()},
        {mode: b / max(1, n) for mode, (b, n) in down.items()},
    )


def _round_overheads(speculative: list[RunRecord], costs: CostProfile) -> tuple[float, dict[VerifyMode, float]]:
    """Median latency of stop-and-wait rounds beyond the modelled parts (never below zero):
    over all rounds, and per verify mode.

    A stop-and-wait edge ships right after its chunk's last draft and blocks until the verdict,
    so each round's ship time and verdict arrival are on the edge's timeline. Round 0 is left
    out: it may also wait for the cloud's prefill.
    """
    excess: dict[VerifyMode, list[float]] = defaultdict(list)
    for r in speculative:
        if r.key.method not in STOP_AND_WAIT or r.key.bandwidth_mbps <= 0:
            continue
        link = LinkProfile(r.key.rtt_ms, r.key.bandwidth_mbps)
        sized, mode = costs.with_link(link), r.key.verify
        rounds = zip(r.chunk_lengths, r.verify_times, _ship_times(r.timeline))
        for i, (n, verify_s, (shipped, arrived)) in enumerate(rounds):
            if i:
                modelled = sized.uplink_s(mode, n) + link.rtt_ms / 1000 + verify_s + sized.downlink_s(mode)
                excess[mode].append(arrived - shipped - modelled)
    by_mode = {mode: max(0.0, statistics.median(values)) for mode, values in excess.items()}
    everything = [v for values in excess.values() for v in values]
    return (max(0.0, statistics.median(everything)) if everything else 0.0), by_mode


def _ship_times(timeline: list[dict]) -> list[tuple[float, float]]:
    """(end of the last draft before a verdict, the verdict's arrival) per verdict."""
    pairs, last_draft_end = [], None
    for event in timeline:
        if event["kind"] == "draft":
            last_draft_end = event["end"]
        elif event["kind"] == "verdict" and last_draft_end is not None:
            pairs.append((last_draft_end, event["start"]))
    return pairs
