"""When the edge drafts, ships a chunk and orders tokens from the cloud: the fixed pipeline's
policy as a pure function of counts, the controller's decisions over the same counts, and the loop
around them, so the real edge (edge/pipeline.py) and the simulator (bench/simulator.py) share all
three; they differ only in their clocks and in how verdicts and tokens arrive."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

from picospec.edge.controller import LOOKUP_TRACKING, Controller, Mode


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


class ControlledLoop(EdgeLoop):
    """EdgeLoop deciding by a Controller (edge/controller.py) when one runs the session, by the
    fixed ChunkPolicy when `controller` is None. With one, the edge speculates in chunks as long as
    the cost model says pays, or orders tokens from the cloud (DecodeOrder) and follows them."""

    controller: Controller | None
    max_chunk: int  # the longest chunk: the controller's, within the cloud's limit

    def _can_draft(self) -> bool:
        if self.controller is None:
            return super()._can_draft()
        produced, building, in_flight = self._counts()
        if self.controller.mode is Mode.FALLBACK or self._decoding():
            return False
        if self.controller.lookup_only and not self._lookup_run():
            return False  # the drafter drafts nothing of its own here
        unverified = building + in_flight
        return (
            produced + unverified < self.policy.max_new_tokens
            and unverified < self.controller.config.max_lookahead
            and building < self.max_chunk
            and self._chunks_in_flight() < self.controller.config.chunks_ahead
        )

    def _should_ship(self) -> bool:
        if self.controller is None:
            return super()._should_ship()
        _, building, in_flight = self._counts()
        if self.controller.mode is Mode.FALLBACK:
            # Ship what was drafted before the switch; then keep the cloud supplied with decode orders.
            return building > 0 or (not self._chunks_in_flight() and self._decode_room() > 0)
        if building == 0 or self._decoding():
            return False
        # An idle cloud gets what is drafted at once (latency-aware truncation: on a CPU the cloud
        # is the bottleneck, and a pass over few tokens costs few steps); a busy one gets the
        # chunk once it is as long as the cost model says pays, or once a doubtful draft ends it
        # (the draft goes with it).
        lookup_ended = self.controller.lookup_only and not self._lookup_run()  # nothing more will join this chunk
        return in_flight == 0 or lookup_ended or self._chunk_target() <= building

    def _chunk_target(self) -> int:
        """How many of the drafted tokens the chunk should hold (more than drafted: draft on)."""
        return self.controller.chunk_target(*self._building_confidences(), pending=not self._builds_on_full_chunk())

    def _decode_room(self) -> int:
        """How many more tokens to order from the cloud now: enough that the next order arrives
        before the cloud has decoded the ones before it, none beyond max_new_tokens."""
        produced, _, in_flight = self._counts()
        costs = self.controller.costs
        # Enough outstanding that the cloud never waits for an order, nor while the drafter catches
        # up (ControllerConfig.follow_batch); tokens ordered ahead are never wasted. A batching
        # cloud's decode step is a shared pass, longer than any catch-up: there a few ahead keep
        # the session able to switch to speculation within a step or two. So does a short queue
        # while prompt lookup proposes the cloud's tokens (it is tracking a copy).
        step_s = 1.0 / costs.fallback_rate
        ahead = 2 + math.ceil(costs.rtt_s / step_s)
        tracking = self.controller.lookup_streak >= LOOKUP_TRACKING
        if not costs.shared and not tracking:
            ahead = max(self.controller.config.follow_batch, ahead)
        # The first order asks for the prompt pass's token alone: its reply says whether passes are
        # shared (a batching cloud), where a decode step costs a whole pass and speculating at once pays.
        first = produced == 0 and in_flight == 0 and self.controller.switches == 0
        keep = 1 if first else min(ahead, self.max_chunk)
        return max(0, min(keep - in_flight, self.policy.max_new_tokens - produced - in_flight))

    def _should_follow(self, unfollowed: int) -> bool:
        """Should the drafter follow the cloud's `unfollowed` tokens now, the edge having nothing
        else to do? In batches while the cloud decodes; each as it arrives after a switch to
        speculation, so that drafting starts as soon as the last decoded token is in, not a
        batch's pass later (0.17 s of an idle cloud per switch)."""
        return unfollowed > 0 and (unfollowed >= self.controller.config.follow_batch or self.controller.mode is Mode.SPECULATE)

    def _drafter_needed(self) -> bool:
        """Whether more than one follow batch is left to generate: a generation that ends within
        one never needs the drafter (nor waits for its prompt pass)."""
        produced, _, _ = self._counts()
        return self.policy.max_new_tokens - produced > self.controller.config.follow_batch

    def _decide(self) -> None:
        """Let the controller switch modes, on everything applied so far."""
        produced, _, in_flight = self._counts()
        self.controller.decide(self._lookup_run(), remaining=self.policy.max_new_tokens - produced - in_flight)

    @abstractmethod
    def _decoding(self) -> bool:
        """Whether tokens ordered from the cloud are still to arrive."""

    @abstractmethod
    def _chunks_in_flight(self) -> int:
        """How many chunks await their verdicts."""

    @abstractmethod
    def _lookup_run(self) -> int:
        """How many tokens prompt lookup proposes now (0: none, or lookup is off)."""

    @abstractmethod
    def _building_confidences(self) -> tuple[Sequence[float], Sequence[bool]]:
        """The drafter's confidence in each token being built, and which prompt lookup proposed."""

    @abstractmethod
    def _builds_on_full_chunk(self) -> bool:
        """Whether the chunk being built follows a draft chunk in flight, or one that passed in
        full: then its pass evaluates its own tokens alone (else also the correction, or the
        cloud's last decoded token, before them)."""
