"""The cost model and the controller on constructed costs and acceptance with a known optimum."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from picospec.costmodel import (
    MAX_PASS_TOKENS,
    CostCurve,
    Costs,
    CostTracker,
    best_chunk_len,
    replay_rate,
    speculation_pays,
    steady_rate,
)
from picospec.edge.controller import LOOKUP_PRIOR, AcceptanceModel, Controller, ControllerConfig, Mode
from picospec.errors import InvalidInputError, ProtocolError
from picospec.wire import picospec_pb2 as pb
from picospec.wire.messages import PROTOCOL_VERSION, parse_welcome

FLAT = CostCurve((0.1,) * 16, decode_s=0.1)  # a GPU: a pass costs the same for 1 or 16 tokens
LINEAR = CostCurve(tuple(0.1 * m for m in range(1, 17)), decode_s=0.1)  # verifying m costs m steps
# This machine's CPU, roughly: a step per token up to 8, a quarter step per token beyond.
CPU = CostCurve(tuple(0.05 * m if m <= 8 else 0.4 + 0.0125 * (m - 8) for m in range(1, 33)), decode_s=0.05)


def costs(curve: CostCurve, draft_s: float = 0.0, rtt_s: float = 0.0) -> Costs:
    return Costs(curve, draft_s, rtt_s)


def test_a_flat_curve_and_perfect_drafts_take_the_longest_chunk():
    assert best_chunk_len([], 1.0, costs(FLAT), 16)[0] == 16


def test_a_linear_curve_never_rewards_a_longer_chunk_than_one():
    j, rate = best_chunk_len([], 0.9, costs(LINEAR), 16)
    assert j == 1 and rate == pytest.approx(10.0)  # one token per 0.1 s: what cloud decoding earns


def test_a_cheap_step_in_the_curve_sets_the_chunk_length():
    curve = CostCurve((0.1, 0.1, 0.1, 0.1, 1.0, 1.0), decode_s=0.1)
    assert best_chunk_len([], 1.0, costs(curve), 6)[0] == 4


def test_the_chunk_is_cut_before_an_unlikely_token():
    # Two confident drafts, then one that will almost surely fail: ship the two.
    assert best_chunk_len([0.99, 0.99, 0.05], 0.99, costs(FLAT, rtt_s=0.5), 16)[0] == 2
    assert best_chunk_len([0.99, 0.99, 0.99], 0.99, costs(FLAT, rtt_s=0.5), 16)[0] > 3


def test_a_slow_drafter_shortens_chunks():
    fast = best_chunk_len([], 0.9, costs(FLAT, draft_s=0.001), 16)[0]
    slow = best_chunk_len([], 0.9, costs(FLAT, draft_s=0.05), 16)[0]
    assert slow < fast


def test_replay_rate_where_drafts_never_pass_pays_each_correction_in_the_next_pass():
    # A chunk of one, rejected, every time: its pass also evaluates the last correction (2 steps).
    assert replay_rate([0.0] * 32, costs(LINEAR), 16) == pytest.approx(5.0)
    assert replay_rate([1.0] * 32, costs(FLAT), 16) == pytest.approx(160.0)


# A CPU whose passes over 9-16 tokens all cost what 16 do, and a pass over 17 twice that.
STEPPED = CostCurve(tuple(0.1 * m if m <= 8 else (1.0 if m <= 16 else 2.0) for m in range(1, 18)), decode_s=0.1)


def test_a_chunk_after_a_correction_is_planned_with_the_correction_in_its_pass():
    assert best_chunk_len([], 1.0, costs(STEPPED), 16)[0] == 16  # 16 tokens a second
    # After a rejection the pass evaluates the correction too: 16 drafts would make a pass of 17.
    assert best_chunk_len([], 1.0, costs(STEPPED).after(1.0), 16)[0] == 15
    controller = make_controller(STEPPED)
    sure = [0.999] * 16
    assert controller.chunk_target(sure) == 16 and controller.chunk_target(sure, pending=True) == 15


def test_a_verdict_s_pass_is_timed_as_a_pass_over_its_chunk_and_the_correction_before_it():
    controller = make_controller(LINEAR)
    controller.observe_verdict([0.99] * 4, accepted=4, verify_s=1.5, now_s=1.0, committed=4, pending=True)
    controller.observe_verdict([0.99] * 4, accepted=4, verify_s=0.9, now_s=2.0, committed=8, pending=False)
    curve = controller.tracker.curve
    assert curve.verify(5) == pytest.approx(0.5 + 0.2 * (1.5 - 0.5)) and curve.verify(4) == pytest.approx(0.4 + 0.2 * 0.5)


def test_the_steady_rate_is_the_replay_of_the_window_repeated():
    window = [0.3] + [0.99] * 7  # a doubtful token every 8
    assert steady_rate(window, costs(CPU, 0.01, 0.02), 16) == pytest.approx(replay_rate(window * 8, costs(CPU, 0.01, 0.02), 16))
    assert steady_rate([1.0] * 4, costs(FLAT), 16) == pytest.approx(160.0)  # chunks of 16 whatever the window's length
    assert replay_rate([1.0] * 4, costs(FLAT), 4) == pytest.approx(40.0) and steady_rate([], costs(FLAT), 16) == 0.0


def test_a_replay_cuts_chunks_by_the_estimates_and_scores_them_by_what_happened():
    flat = costs(FLAT, 0.0, 0.1)
    sure = [0.99] * 32
    assert replay_rate(sure, flat, 16, outcomes=sure) == pytest.approx(replay_rate(sure, flat, 16))
    # Chunks of 16 (the estimates say so), every one rejected at its first token: one token per
    # pass and round trip, 0.1 + 0.1 s.
    assert replay_rate(sure, flat, 16, outcomes=[0.0] * 32) == pytest.approx(1 / 0.2)
    # Doubtful estimates cut chunks short; drafts that all passed still earn more than estimated.
    doubtful, passed = [0.5] * 32, [1.0] * 32
    assert steady_rate(doubtful, flat, 16, passed) > steady_rate(doubtful, flat, 16)
    with pytest.raises(InvalidInputError):
        replay_rate(sure, flat, 16, outcomes=[1.0])


def test_a_switch_to_speculation_must_repay_its_start_up_over_the_tokens_left():
    # Cloud decoding earns 10 tokens/s; speculation 20 once its first chunk is back, which takes
    # t_d + rtt + V(16) = 0.01 + 0.05 + 0.1 = 0.16 s: with a 5% margin it pays from 3 tokens left.
    flat = costs(FLAT, 0.01, 0.05)
    assert [speculation_pays(20.0, flat, n, 0.05, 16) for n in (0, 1, 2, 3, 100)] == [False, False, False, True, True]
    assert speculation_pays(20.0, flat, None, 0.05, 16) and not speculation_pays(10.4, flat, None, 0.05, 16)
    # The controller weighs the same: a sure drafter is not worth a switch for the last token.
    def decide(remaining: int) -> Mode:
        controller = make_controller(FLAT, window=4, probe_every=1000)
        for _ in range(4):
            controller.observe_decoded(0.99, 1.0)
        return controller.decide(remaining=remaining)

    assert decide(remaining=1) is Mode.FALLBACK and decide(remaining=100) is Mode.SPECULATE


def test_a_pass_shared_with_other_sessions_costs_what_the_whole_pass_does():
    shared = Costs(CPU, 0.0, 0.0, shared=12.0)
    assert shared.pass_s(4) == pytest.approx(CPU.verify(16))
    assert shared.fallback_rate == pytest.approx(1 / CPU.verify(13))  # here a decode step costs V(1)
    assert Costs(CPU, 0.0, 0.0, shared=2.5).pass_s(1) == pytest.approx((CPU.verify(3) + CPU.verify(4)) / 2)
    assert Costs(CPU, 0.0, 0.0).fallback_rate == pytest.approx(1 / CPU.decode_s)


def test_a_noisy_curve_cheaper_with_other_sessions_tokens_never_makes_cloud_decoding_free_or_negative():
    # A toy cloud's curve after many sessions' refinements (session 30): V(4) < V(1) - decode_s. A
    # negative rate made the edge order no tokens and wait for them until the cloud's idle limit.
    noisy = CostCurve((6.9e-5, 4.1e-5, 3.3e-5, 3.1e-5), decode_s=1.8e-5)
    assert Costs(noisy, 0.0, 0.002, shared=3.0).fallback_rate == pytest.approx(1 / noisy.decode_s)


@given(
    st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=20), st.floats(1e-6, 1.0), st.floats(0.0, 30.0),
)
def test_cloud_decodings_rate_is_positive_and_at_most_one_token_per_step(verify_s, decode_s, shared):
    rate = Costs(CostCurve(tuple(verify_s), decode_s), 0.0, 0.0, shared=shared).fallback_rate
    assert 0 < rate <= 1 / decode_s


def test_sharing_a_batching_clouds_passes_makes_speculation_pay_where_alone_it_does_not():
    alone, shared = Costs(CPU, 0.01, 0.02), Costs(CPU, 0.01, 0.02, shared=12.0)
    assert best_chunk_len([], 0.95, alone, 16)[1] < alone.fallback_rate  # alone: let the cloud decode
    j, rate = best_chunk_len([], 0.95, shared, 16)
    assert j == 16 and rate > 5 * shared.fallback_rate  # the drafts ride in a pass that runs anyway


def test_a_controller_that_learns_its_passes_are_shared_speculates_where_alone_it_would_not():
    alone, shared = make_controller(CPU, window=4, probe_every=1000), make_controller(CPU, window=4, probe_every=1000)
    for _ in range(16):
        for controller in (alone, shared):
            controller.observe_decoded(0.99, 0.95)
        alone.observe_decode_step(0.05)
        shared.observe_decode_step(CPU.verify(13), shared_tokens=12)
    assert alone.decide() is Mode.FALLBACK and shared.decide() is Mode.SPECULATE
    assert shared.tracker.curve.verify(13) == pytest.approx(CPU.verify(13))  # the shared pass's size, not 1


def test_a_session_speculates_from_its_first_tokens_where_the_prior_alone_says_it_pays_by_far():
    shared, alone, gpu = make_controller(CPU), make_controller(CPU), make_controller(FLAT)
    shared.observe_decode_step(CPU.verify(13), shared_tokens=12)  # the prompt pass's token, in a shared pass
    alone.observe_decode_step(CPU.decode_s)
    assert (shared.decide(), alone.decide(), gpu.decide()) == (Mode.SPECULATE, Mode.FALLBACK, Mode.SPECULATE)
    cautious = make_controller(CPU, early_margin=100.0)
    cautious.observe_decode_step(CPU.verify(13), shared_tokens=12)
    assert cautious.decide() is Mode.FALLBACK


@pytest.mark.parametrize(
    "verify_s, decode_s",
    [((), 0.1), ((math.nan,), 0.1), ((0.1, -0.1), 0.1), ((0.1,), 0.0), ((0.1,), math.inf), ((1e9,), 0.1),
     ((0.1,) * (MAX_PASS_TOKENS + 1), 0.1)],  # fmt: skip
)
def test_a_nonsensical_cost_curve_is_refused(verify_s, decode_s):
    with pytest.raises(InvalidInputError):
        CostCurve(verify_s, decode_s)
    welcome = pb.Welcome(protocol_version=PROTOCOL_VERSION, max_context=64, max_chunk_tokens=8,
                         costs=pb.CostCurve(verify_s=list(verify_s), decode_s=decode_s))  # fmt: skip
    with pytest.raises(ProtocolError, match="unusable cost curve"):
        parse_welcome(welcome)


def test_cost_tracker_follows_real_passes_and_extends_the_curve():
    tracker = CostTracker(CostCurve((0.1, 0.2), 0.1), weight=0.5)
    tracker.observe_verify(1, 0.3)
    tracker.observe_verify(4, 0.4)
    tracker.observe_verify(2, math.nan)  # ignored
    curve = tracker.curve
    assert curve.verify(1) == pytest.approx(0.2) and curve.verify(2) == pytest.approx(0.2)
    # Sizes 3 and 4 were extended along the slope (flat by then) before size 4 moved halfway to 0.4.
    assert curve.max_measured == 4 and curve.verify(4) == pytest.approx(0.3)


def test_cost_tracker_decode_step_ignores_a_slow_step_and_follows_a_lasting_change():
    tracker = CostTracker(CostCurve((0.1,), 0.1))
    for seconds in (0.1, 0.1, 0.1, 0.1, 0.3, 0.1):  # one step slowed by a neighbour's pass
        tracker.observe_decode(seconds)
    assert tracker.curve.decode_s == pytest.approx(0.1)
    for _ in range(9):
        tracker.observe_decode(0.2)
    assert tracker.curve.decode_s == pytest.approx(0.2)


def test_acceptance_model_learns_per_confidence_bin():
    model = AcceptanceModel()
    for _ in range(50):
        model.observe(0.99, 1.0)
        model.observe(0.3, 0.0)
    assert model.estimate(0.995) > 0.95 and model.estimate(0.2) < 0.1
    assert AcceptanceModel(by_confidence=False).estimate(0.2) == AcceptanceModel(by_confidence=False).mean


def make_controller(curve: CostCurve, **config) -> Controller:
    return Controller(ControllerConfig(**config), CostTracker(curve), draft_s=0.01, rtt_s=0.0)


def test_speculation_that_earns_less_than_cloud_decoding_falls_back():
    controller = make_controller(LINEAR, window=4, judge_window=4)
    controller.mode = Mode.SPECULATE
    controller.mark(0.0, 100)
    for i in range(1, 5):  # 2 tokens per second, against cloud decoding's 10
        controller.observe_verdict([0.99, 0.99], accepted=0, verify_s=0.2, now_s=i * 0.5, committed=100 + i)
    assert controller.decide() is Mode.FALLBACK


def test_one_rejection_does_not_end_speculation_that_pays_over_the_run():
    # Cloud decoding earns 20 tokens/s. A chunk of 16 passes in 0.4 s, then one is rejected at its
    # first token and the restart takes 0.5 s: 17 tokens in 0.9 s, 18.9 tokens/s over that span.
    def speculate(judge_window: int) -> Mode:
        controller = make_controller(CPU, judge_window=judge_window)
        controller.mode = Mode.SPECULATE
        controller.mark(0.0, 0)
        controller.observe_verdict([0.99] * 16, accepted=16, verify_s=0.4, now_s=0.4, committed=16)
        controller.observe_verdict([0.99] * 16, accepted=0, verify_s=0.4, now_s=0.9, committed=17)
        return controller.decide()

    assert speculate(judge_window=32) is Mode.SPECULATE  # not judged before 32 tokens
    assert speculate(judge_window=16) is Mode.FALLBACK


def test_speculation_that_falls_behind_cloud_decoding_is_judged_before_its_window_of_tokens():
    # Cloud decoding earns 10 tokens/s; speculation commits 2 tokens per 0.5 s, every draft passing
    # (what the model does not see: the drafter slowing the cloud's passes on one machine). Judged
    # over 32 committed tokens it would run 8 s; it is judged at the first verdict after 3.2 s.
    # (A replay trusted as it is: with the prior bias the early rule ends it sooner, the next test.)
    controller = make_controller(LINEAR, judge_window=32, prior_bias=1.0)
    controller.mode = Mode.SPECULATE
    controller.mark(0.0, 100)
    for i in range(1, 7):
        controller.observe_verdict([0.99, 0.99], accepted=2, verify_s=0.2, now_s=i * 0.5, committed=100 + 2 * i)
        assert controller.decide() is Mode.SPECULATE  # 3.0 s: not yet as long as 32 decode steps
    controller.observe_verdict([0.99, 0.99], accepted=2, verify_s=0.2, now_s=3.5, committed=114)
    assert controller.decide() is Mode.FALLBACK


def test_speculation_behind_by_more_than_its_start_up_whose_drafts_fail_falls_back_at_its_next_verdict():
    # Cloud decoding earns 20 tokens/s; a switch's start-up is a pass over 16 and a draft step,
    # 0.51 s. Confident drafts rejected at their first token every 0.25 s: at 0.75 s speculation
    # has committed 3 tokens where cloud decoding would have committed 4.8 after that start-up.
    controller = make_controller(CPU)
    controller.mode = Mode.SPECULATE
    controller.mark(0.0, 0)
    modes = []
    for i in range(1, 4):
        controller.observe_verdict([0.99, 0.99], accepted=0, verify_s=0.1, now_s=i * 0.25, committed=i)
        modes.append(controller.decide())
    assert modes == [Mode.SPECULATE, Mode.SPECULATE, Mode.FALLBACK]  # the judge window's rule: at 1.6 s


def test_a_slow_start_whose_drafts_pass_is_not_ended_early():
    # The first verdict comes late (a slow first pass), behind cloud decoding by more than the
    # start-up, but every draft passed: the replay of what the cloud verified says it pays.
    controller = make_controller(CPU)
    controller.mode = Mode.SPECULATE
    controller.mark(0.0, 0)
    controller.observe_verdict([0.99] * 16, accepted=16, verify_s=1.0, now_s=1.5, committed=16)
    assert controller.decide() is Mode.SPECULATE


def test_speculation_that_earns_more_stays():
    controller = make_controller(FLAT, window=4)
    controller.mode = Mode.SPECULATE
    controller.mark(0.0, 100)
    for i in range(1, 5):  # 16 tokens per 0.1 s
        controller.observe_verdict([0.99] * 16, accepted=16, verify_s=0.1, now_s=i * 0.1, committed=100 + 16 * i)
    assert controller.decide() is Mode.SPECULATE


def test_fallback_resumes_speculation_only_where_the_drafts_would_pay():
    # Where the drafter agrees with every token the cloud decodes and a pass is flat, speculate.
    agreeing = make_controller(FLAT, window=4, probe_every=1000)
    assert agreeing.mode is Mode.FALLBACK
    for _ in range(4):
        agreeing.observe_decoded(0.99, 1.0)
    assert agreeing.decide() is Mode.SPECULATE
    # Where it never agrees, stay with cloud decoding until the probe interval.
    disagreeing = make_controller(LINEAR, window=4, probe_every=8)
    for _ in range(7):
        disagreeing.observe_decoded(0.3, 0.0)
        assert disagreeing.decide() is Mode.FALLBACK
    disagreeing.observe_decoded(0.3, 0.0)
    assert disagreeing.decide() is Mode.SPECULATE  # the probe


def test_each_window_of_the_shadow_is_judged_once():
    # Four positions the drafter would have missed, then ones it would have passed: the replay of
    # the overlapping window after 5 positions already pays on this curve (judged at every
    # decision, it switched there); judged a window at a time, it switches after 8.
    controller = make_controller(FLAT, window=4, probe_every=1000, early_margin=100.0)
    modes = []
    for passed in [0.0] * 4 + [1.0] * 4:
        controller.observe_decoded(0.99 if passed else 0.3, passed)
        modes.append(controller.decide())
    assert modes == [Mode.FALLBACK] * 7 + [Mode.SPECULATE]


def window_of_agreement(confidence: float, **config) -> Mode:
    """The mode after 8 positions the drafter would all have passed, drafted with `confidence`."""
    controller = make_controller(CPU, window=8, probe_every=1000, early_margin=100.0, **config)
    for _ in range(8):
        controller.observe_decoded(confidence, 1.0)
    return controller.decide()


def test_a_short_run_of_agreement_at_middling_confidence_does_not_start_speculation():
    # Confident drafts (code) start speculation after a window of 8; drafts at 0.93 that all
    # passed (a chance run in chat) do not: their outcomes are weighed against what that
    # confidence usually earns, and the replay is taken as optimistic until measured. Either
    # alone lets this window through (the replay says 1.2-1.35x of cloud decoding).
    assert window_of_agreement(0.99) is Mode.SPECULATE
    assert window_of_agreement(0.93) is Mode.FALLBACK
    assert window_of_agreement(0.93, estimate_weight=0.0) is Mode.SPECULATE
    assert window_of_agreement(0.93, prior_bias=1.0) is Mode.SPECULATE


def test_without_fallback_the_controller_always_speculates():
    controller = make_controller(LINEAR, fallback=False, window=2)
    controller.mark(0.0, 0)
    for i in range(1, 5):
        controller.observe_verdict([0.5], accepted=0, verify_s=1.0, now_s=float(i), committed=i)
    assert controller.decide() is Mode.SPECULATE


# -- prompt lookup's tokens ----------------------------------------------------------------------


def test_lookup_tokens_keep_their_own_acceptance_estimate():
    controller = make_controller(CPU)
    slm_before = controller.acceptance.estimate(0.6)
    # Two lookup tokens, the second rejected; the drafter's token after them is never verified.
    controller.observe_verdict([0.6, 0.6, 0.6], accepted=1, verify_s=0.1, now_s=1.0, committed=10, looked_up=[True, True, False])
    assert controller.acceptance.estimate(0.6) == slm_before
    assert controller.lookup.estimate(0.6) == pytest.approx((LOOKUP_PRIOR[1] * 3 + 1) / 5)


def test_chunks_extend_over_lookup_tokens_that_pass_where_the_drafters_would_be_cut():
    controller = make_controller(CPU)
    for _ in range(200):  # in this session lookup's doubtful tokens pass, the drafter's fail
        controller.lookup.observe(0.6, 1.0)
        controller.acceptance.observe(0.6, 0.0)
    assert controller.chunk_target([0.6] * 16, [True] * 16) == 16
    assert controller.chunk_target([0.6] * 16) == 1
    # Mixed: the chunk holds the lookup run and one doubtful token of the drafter's (where it
    # fails, its slot still yields the correction, nearly free at 9 tokens), not a second one.
    assert controller.chunk_target([0.6] * 10, [True] * 8 + [False] * 2) == 9


def test_lookup_tokens_are_not_charged_the_drafters_step():
    # A flat pass, and a drafter step as long as the pass: the drafter's chunks earn the same at
    # any length (drafting is the bottleneck), lookup's cost one batched pass on the edge.
    controller = Controller(ControllerConfig(), CostTracker(FLAT), draft_s=0.1, rtt_s=0.0)
    for _ in range(200):
        controller.lookup.observe(0.99, 1.0)
        controller.acceptance.observe(0.99, 1.0)
    assert controller.chunk_target([0.99] * 16) == 1
    assert controller.chunk_target([0.99] * 16, [True] * 16) == 16


def test_a_lookup_token_is_kept_unless_the_drafter_is_surer_of_its_own():
    controller = make_controller(CPU)
    assert controller.keeps_lookup(0.3, 0.3, agrees=True)  # the drafter would draft it too
    assert not controller.keeps_lookup(0.6, 0.65, agrees=False)  # lookup is not tracking a copy
    for _ in range(2):
        controller.observe_lookup_shadow(True)
    assert not controller.keeps_lookup(0.01, 0.99, agrees=False)  # 0.7 (lookup, < 0.5) < 0.99 (drafter, >= 0.97)
    assert controller.keeps_lookup(0.6, 0.65, agrees=False)  # 0.85 >= 0.6: the same bin, lookup's prior is higher


def test_a_long_lookup_match_that_pays_ends_cloud_decoding():
    controller = make_controller(CPU, window=16, probe_every=1000)
    assert controller.mode is Mode.FALLBACK
    for _ in range(30):  # lookup would have proposed each of the cloud's last 30 tokens
        controller.observe_lookup_shadow(True)
    assert controller.decide(lookup_run=2) is Mode.FALLBACK  # two tokens cost two steps: no gain
    assert controller.decide(lookup_run=16) is Mode.SPECULATE  # sixteen cost ten steps


def test_speculation_on_lookups_tokens_alone_ends_when_lookup_has_nothing_that_pays():
    controller = make_controller(CPU, window=16, probe_every=64)
    for _ in range(30):
        controller.observe_lookup_shadow(True)
    assert controller.decide(lookup_run=16) is Mode.SPECULATE and controller.lookup_only
    assert controller.decide(lookup_run=16) is Mode.SPECULATE  # lookup proposes on
    assert controller.decide(lookup_run=0) is Mode.FALLBACK and not controller.lookup_only
    assert controller._probe_every == 64  # not a failed probe of the drafter's
    # A rejected lookup token ends the run too.
    assert controller.decide(lookup_run=16) is Mode.SPECULATE
    controller.observe_verdict([0.9] * 4, accepted=1, verify_s=0.1, now_s=1.0, committed=50, looked_up=[True] * 4)
    assert controller.decide(lookup_run=16) is Mode.FALLBACK


def test_one_wrong_proposal_ends_lookups_streak():
    controller = make_controller(CPU, window=16, probe_every=1000)
    for _ in range(30):
        controller.observe_lookup_shadow(True)
    controller.observe_lookup_shadow(False)
    assert controller.lookup_streak == 0 and controller.decide(lookup_run=16) is Mode.FALLBACK
    controller.observe_verdict([0.9] * 3, accepted=2, verify_s=0.1, now_s=1.0, committed=40, looked_up=[True] * 3)
    assert controller.lookup_streak == 0  # two passed, the third did not
    controller.observe_verdict([0.9] * 3, accepted=3, verify_s=0.1, now_s=2.0, committed=43, looked_up=[True] * 3)
    assert controller.lookup_streak == 3


def test_a_lookup_match_does_not_end_cloud_decoding_where_it_would_not_pay():
    wrong = make_controller(CPU, window=16, probe_every=1000)
    for _ in range(16):  # lookup's proposals have been wrong
        wrong.observe_lookup_shadow(False)
    assert wrong.decide(lookup_run=16) is Mode.FALLBACK
    # A pass costs a step per token: even perfect lookup runs earn what cloud decoding earns.
    linear = make_controller(LINEAR, window=16, probe_every=1000)
    for _ in range(16):
        linear.observe_lookup_shadow(True)
    assert linear.decide(lookup_run=16) is Mode.FALLBACK


@pytest.mark.parametrize(
    "settings",
    [{"max_chunk": 0}, {"max_chunk": 8, "max_lookahead": 4}, {"chunks_ahead": 0}, {"follow_batch": 0}, {"window": 1}, {"margin": -0.1}, {"estimate_weight": -1.0}, {"prior_bias": 0.0}, {"prior_bias": 1.5}],
)
def test_a_controller_config_that_cannot_run_is_refused(settings):
    with pytest.raises(InvalidInputError, match="controller:"):
        ControllerConfig(**settings)
