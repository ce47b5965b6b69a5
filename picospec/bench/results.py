"""The benchmark's result records, shared by the runner, the bound, the simulator and the report.

Results live in one JSON-lines file, one RunRecord per line, appended as runs finish, so an
interrupted benchmark resumes by skipping the keys already present.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from picospec.edge.config import Method
from picospec.edge.report import EdgeReport
from picospec.errors import InvalidInputError
from picospec.verify import VerifyMode

NO_NETWORK = "none"  # the profile edge-only runs are filed under
# The verify mode recorded for methods whose runs do not depend on it (ar, edge).
MODELESS_VERIFY = VerifyMode.EXACT


@dataclass(frozen=True)
class CellKey:
    """One cell of the matrix, and which prompt and repeat of it a run is."""

    workload: str  # humaneval | mtbench
    prompt_id: str
    method: Method
    verify: VerifyMode
    profile: str  # lan | wan | cellular | constrained | extreme | custom name
    rtt_ms: float
    bandwidth_mbps: float
    temperature: float
    repeat: int

    def __post_init__(self) -> None:
        # Results files hold the enums' values; keys hold the enums.
        object.__setattr__(self, "method", Method(self.method))
        object.__setattr__(self, "verify", VerifyMode(self.verify))

    @property
    def prompt(self) -> str:
        """"workload:prompt_id": how per-prompt costs are keyed (prompt ids repeat across workloads)."""
        return f"{self.workload}:{self.prompt_id}"

    def cell(self) -> tuple:
        """The key without prompt and repeat: runs of one cell are aggregated together."""
        return (self.workload, self.method, self.verify, self.profile, self.rtt_ms, self.bandwidth_mbps, self.temperature)


@dataclass
class RunRecord:
    """One generation of the benchmark, with everything the report, bound and simulator need."""

    key: CellKey
    summary: dict  # EdgeReport.summary(): tokens_per_s, ttft_s, bytes, passes, ...
    accepted_lengths: list[int] = field(default_factory=list)  # per round
    chunk_lengths: list[int] = field(default_factory=list)  # per round
    verify_times: list[float] = field(default_factory=list)  # per round (ar: per token) cloud compute s
    timeline: list[dict] = field(default_factory=list)  # edge-side events {kind, start, end}
    token_ids: list[int] = field(default_factory=list)
    topk_tail_mass: list[float] = field(default_factory=list)  # topk: dropped tail per rejection
    # The benchmark-wide settings the run was made with (max_new_tokens, chunk_len, models, ...):
    # CellKey leaves them out, so a results file must not mix runs made with different settings.
    settings: dict = field(default_factory=dict)

    @property
    def controlled(self) -> bool:
        """Whether the controller ran this generation (picospec's pipeline under --policy adaptive;
        the setting is the benchmark's, the other methods never run one)."""
        return self.key.method.pipelined and self.settings.get("policy") == "adaptive"

    @staticmethod
    def from_report(key: CellKey, report: EdgeReport, settings: dict | None = None) -> "RunRecord":
        return RunRecord(
            key=key,
            summary=report.summary(),
            accepted_lengths=list(report.accepted_lengths),
            chunk_lengths=list(report.chunk_lengths),
            verify_times=list(report.verify_times),
            timeline=[asdict(e) for e in report.timeline],
            token_ids=list(report.token_ids),
            topk_tail_mass=list(report.topk_tail_mass),
            settings=dict(settings or {}),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(line: str) -> "RunRecord":
        data = json.loads(line)
        return RunRecord(key=CellKey(**data.pop("key")), **data)


def load_records(path: Path) -> list[RunRecord]:
    """Every record in a results file (an absent file has none)."""
    if not Path(path).exists():
        return []
    with open(path) as f:
        return [RunRecord.from_json(line) for line in f if line.strip()]


def load_runs(path: Path) -> list[RunRecord]:
    """The records of a results file a command reads (compare, report, ideal, simulate): one that
    is absent or holds no runs is an error, not an empty table."""
    records = load_records(path)
    if not records:
        raise InvalidInputError(f"{path} holds no runs" if Path(path).exists() else f"{path}: no such results file")
    return records


def append_records(path: Path, records: Iterable[RunRecord]) -> None:
    """Append records, flushing each so an interruption loses at most the run in progress."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for record in records:
            f.write(record.to_json() + "\n")
            f.flush()
