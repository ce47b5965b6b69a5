"""When the edge drafts and when it ships a chunk: the pipeline's policy as a pure function of
counts, so the real edge (edge/pipeline.py) and the simulator (bench/simulate.py) share it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkPolicy:
    """Stop-and-wait ships a full chunk and waits for its verdict; the pipeline drafts ahead up to
    max_lookahead unverified tokens and ships early whenever no chunk is in flight, so the cloud
    never idles while the edge holds drafts (latency-aware truncation)."""

    pipelined: bool
    chunk_len: int
    max_lookahead: int
    max_new_tokens: int

    def can_draft(self, produced: int, building: int, in_flight: int) -> bool:
        """May the edge draft one more token?

        produced: tokens already committed; building: drafted, not shipped; in_flight: shipped,
        awaiting verdicts.
        """
        unverified = building + in_flight
        if self.max_new_tokens - produced - unverified <= 0:
            return False
        if self.pipelined:
            return unverified < self.max_lookahead and building < self.chunk_len
        return in_flight == 0 and building < self.chunk_len

    def should_ship(self, produced: int, building: int, in_flight: int) -> bool:
        """Should the tokens being built go out now as one chunk?"""
        if building == 0:
            return False
        if building >= self.chunk_len:
            return True
        cloud_idle = in_flight == 0
        return cloud_idle and (self.pipelined or not self.can_draft(produced, building, in_flight))
