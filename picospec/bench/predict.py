"""What the simulator predicts for each cell of the benchmark, against what was measured there.

A measured cell is simulated run by run, with each run's own acceptance trace and length, on the
costs of its network profile's stretch of the benchmark (measure.py's window_costs), and also
replayed with each run's own compute costs (run_costs), which leaves only the protocol model's
error. A cell without runs is simulated once per prompt of its group.

A run made with the controller (picospec's default policy) is simulated with it, on the
teacher-forced trace of its prompt (forced.py: the drafter's confidence, which the controller
cuts chunks and judges the cloud's tokens by, is not in the recorded rounds); without one it is
left out.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from picospec.bench.bound import Policy, PositionTrace
from picospec.bench.costs import CostProfile
from picospec.bench.forced import TraceKey, trace_of
from picospec.bench.measure import measure_costs, run_costs, window_costs
from picospec.bench.results import MODELESS_VERIFY, RunRecord
from picospec.bench.simulator import PositionOutcomes, SimConfig, SimResult, simulate
from picospec.bench.traces import TraceSource
from picospec.edge.config import Method
from picospec.edge.controller import ControllerConfig
from picospec.transport.netem import LinkProfile
from picospec.verify import VerifyMode


@dataclass(frozen=True)
class Prediction:
    """Predicted (and, where the results have it, measured) median tokens/s of one cell."""

    workload: str
    temperature: float
    profile: str
    rtt_ms: float
    bandwidth_mbps: float
    method: Method
    verify: VerifyMode
    predicted: float
    measured: float | None
    replayed: float | None = None  # each measured run simulated with its own compute costs

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured."""
        return _relative(self.predicted, self.measured)

    @property
    def replay_error(self) -> float | None:
        """(replayed - measured) / measured."""
        return None if self.replayed is None else _relative(self.replayed, self.measured)


def _relative(value: float, reference: float | None) -> float | None:
    return None if reference is None else (value - reference) / reference


def run_policy(record: RunRecord) -> tuple[Policy, int]:
    """The chunking policy and max_new_tokens a run was made with (from its settings; older
    records without them: the longest chunk and the EdgeConfig defaults)."""
    s = record.settings
    chunk_len = int(s.get("chunk_len", max(record.chunk_lengths, default=4)))
    lookahead = max(chunk_len, int(s.get("lookahead", 8)))
    return Policy(chunk_len, lookahead), int(s.get("max_new_tokens", record.summary["new_tokens"]))


def _variants(
    records: Sequence[RunRecord], methods: Sequence[Method], costs: CostProfile
) -> list[tuple[Method, VerifyMode]]:
    """(method, verify mode) pairs to predict: the modes the results ran, or else each method's
    default mode if the costs know its message sizes."""
    present = {(r.key.method, r.key.verify) for r in records}
    variants = []
    for method in methods:
        modes = sorted({mode for m, mode in present if m == method})
        if not method.speculative:
            variants.append((method, MODELESS_VERIFY))
        elif modes or costs.sizes(default := method.default_mode):
            variants += [(method, mode) for mode in modes or [default]]
    return variants


def predict_cells(
    records: Sequence[RunRecord],
    costs: CostProfile | None = None,
    methods: Sequence[Method] | None = None,
    link: LinkProfile | None = None,
    alpha: float | None = None,
    seed: int = 0,
    forced: dict[TraceKey, PositionTrace] | None = None,
) -> list[Prediction]:
    """Predict every (workload, temperature) x network x method cell; compare with measured runs.

    costs: None measures them from `records`, one profile per network profile and temperature
    (window_costs; the whole file's for another link), and compares with the measured cells,
    which are also replayed run by run with each run's own compute costs (run_costs). link: one
    network for all cells (named "RTT/BW"); default: each profile in the results. alpha: replace
    the recorded acceptance by Bernoulli(alpha). A measured cell is simulated run by run with
    each run's own trace and length; a cell without runs, once per prompt of its group. forced:
    teacher-forced traces by (prompt, temperature, text), for the runs made with the controller (left
    out without their prompt's; a cell left with none is not predicted).
    """
    compare = costs is None
    windows = window_costs(records) if compare else {}
    costs = costs or measure_costs(records)
    methods = [Method(m) for m in methods] if methods else list(Method)
    if link is not None:
        networks = [(f"{link.rtt_ms:g}/{link.bandwidth_mbps:g}", link)]
    else:
        present = {(r.key.profile, r.key.rtt_ms, r.key.bandwidth_mbps) for r in records if r.key.bandwidth_mbps > 0}
        networks = [(name, LinkProfile(rtt, bw)) for name, rtt, bw in sorted(present, key=lambda p: (p[1], -p[2]))]
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for record in records:
        groups[(record.key.workload, record.key.temperature)].append(record)
    predictions = []
    for (workload, temperature), group in sorted(groups.items()):
        traces = TraceSource(group, alpha, seed)
        for name, net in networks:
            sized = windows.get((name, temperature), costs).with_link(net)
            for method, mode in _variants(group, methods, costs):
                cell = _cell_runs(group, method, mode, net) if compare else []
                if method.speculative:
                    cell = [r for r in cell if simulable(r, method, forced)]

                def rate(run: RunRecord, run_costs: CostProfile) -> float:
                    return simulate_run(run, method, mode, run_costs, traces, forced).tokens_per_s

                runs = cell or [r for r in traces.representatives(mode) if simulable(r, method, forced)]
                if not runs:
                    continue
                predicted = [rate(r, sized) for r in runs]
                predictions.append(
                    Prediction(
                        workload,
                        temperature,
                        name,
                        net.rtt_ms,
                        net.bandwidth_mbps,
                        method,
                        mode,
                        statistics.median(predicted),
                        statistics.median(r.summary["tokens_per_s"] for r in cell) if cell else None,
                        statistics.median(rate(r, run_costs(r, sized)) for r in cell) if cell else None,
                    )
                )
    return predictions


def _cell_runs(group: Sequence[RunRecord], method: Method, mode: VerifyMode, link: LinkProfile) -> list[RunRecord]:
    """The group's runs of one cell; edge-only runs, which use no network, belong to every link's."""
    if method is Method.EDGE:
        return [r for r in group if r.key.method == method]
    return [
        r
        for r in group
        if (r.key.method, r.key.verify, r.key.rtt_ms, r.key.bandwidth_mbps)
        == (method, mode, link.rtt_ms, link.bandwidth_mbps)
    ]


def _controller(record: RunRecord, method: Method) -> ControllerConfig | None:
    """The controller a run was made with (None: the fixed policy, or a method without one)."""
    s = record.settings
    if not method.pipelined or s.get("policy") != "adaptive":
        return None
    return ControllerConfig.for_policy("adaptive", bool(s.get("fallback", True)), bool(s.get("confidence", True)))


def simulate_run(
    record: RunRecord,
    method: Method,
    mode: VerifyMode,
    costs: CostProfile,
    traces: TraceSource,
    forced: dict[TraceKey, PositionTrace] | None,
) -> SimResult:
    """A run (its length, policy and prompt) simulated as `method` in `mode` on `costs`: on its
    acceptance trace, or, made with the controller, on its prompt's forced trace (see simulable)."""
    config = run_config(record, method, mode)
    if config.controller is None:
        return simulate(costs, config, traces.trace(record))
    return simulate(costs, config, PositionOutcomes(trace_of(forced, record, mode), record.key.repeat))


def simulable(record: RunRecord, method: Method, forced: dict[TraceKey, PositionTrace] | None) -> bool:
    """Whether the simulator can replay a run as `method`: under the controller it needs the
    prompt's forced trace."""
    return _controller(record, method) is None or trace_of(forced or {}, record) is not None


def run_config(record: RunRecord, method: Method, mode: VerifyMode) -> SimConfig:
    """What the simulator replays of a run as `method` in `mode`: its policy (the controller it ran
    with, for picospec), length and prompt."""
    policy, max_new_tokens = run_policy(record)
    return SimConfig(
        method, mode, policy, max_new_tokens, record.summary["new_tokens"], record.key.prompt, _controller(record, method)
    )
