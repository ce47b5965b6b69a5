"""When the edge drafts and when it ships a chunk: the pipeline's policy as a pure function of
counts, and the loop around it, so the real edge (edge/pipeline.py) and the simulator
(bench/simulator.py) share both; they differ only in their clocks and in how verdicts arrive."""

from __future__ import annotations

from abc import ABC, abstractmethod
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


class EdgeLoop(ABC):
    """The edge's loop over a ChunkPolicy: apply the verdicts that have arrived, draft one token if
    it may, ship when the policy says so, and otherwise wait for a verdict."""

    policy: ChunkPolicy

    def run_loop(self) -> None:
        """Run until the generation is done."""
        while not self._done():
            self._apply_arrived()
            if self._done():
                break
            if self._can_draft():
                self._draft_one()
            if self._should_ship():
                self._ship()
            elif not self._can_draft():
                self._wait_for_verdict()

    def _can_draft(self) -> bool:
        return self.policy.can_draft(*self._counts())

    def _should_ship(self) -> bool:
        return self.policy.should_ship(*self._counts())

    @abstractmethod
    def _counts(self) -> tuple[int, int, int]:
        """(produced, building, in_flight) token counts, as ChunkPolicy takes them."""

    @abstractmethod
    def _done(self) -> bool:
        """Whether the generation is complete."""

    @abstractmethod
    def _apply_arrived(self) -> None:
        """Apply every verdict that has arrived, without waiting."""

    @abstractmethod
    def _wait_for_verdict(self) -> None:
        """Wait for the next verdict and apply it (and any that came with it)."""

    @abstractmethod
    def _draft_one(self) -> None:
        """Draft one token into the chunk being built."""

    @abstractmethod
    def _ship(self) -> None:
        """Send the chunk being built."""
