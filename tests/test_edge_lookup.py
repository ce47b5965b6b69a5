"""Prompt lookup through the networked pipeline, toy models: the output stays the target's in every
verify mode (greedy identity, gumbel identity with ar, chi-square convergence at temperature 1),
with prompts that repeat themselves, so lookup does propose (asserted)."""

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from picospec.decoding import DraftChunk, Drafter, generate_autoregressive
from picospec.edge.client import generate
from picospec.edge.config import EdgeConfig, Method
from picospec.edge.controller import ControllerConfig
from picospec.edge.lookup import LookupConfig
from picospec.sampling import SamplingParams
from picospec.verify import VerifyConfig, VerifyMode
from stats import ALPHA, sequence_distribution, sequence_pvalue
from clouds import cloud_thread
from test_edge import CONCURRENT_EDGES, MAX_SESSIONS, SWITCHING, address, toy_drafter, toy_target
from picospec.edge.controller import Controller
from picospec.runners.toy import ToyRunner

PROMPT = [1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2]  # "1 2" recurs: lookup proposes "3 4 0 1 2 ..."
LOOKUP = LookupConfig(min_n=2, max_n=3)
SPECULATIVE = [(Method.VANILLA, VerifyMode.FULL)] + [(method, mode) for method in (Method.SYNC, Method.PICOSPEC) for mode in VerifyMode]


@pytest.fixture(scope="module")
def cloud():
    with cloud_thread(toy_target, max_sessions=MAX_SESSIONS) as server:
        yield server


class FlatToy(ToyRunner):
    """The toy target with a pass that costs the same for 1 or 16 tokens (a GPU's curve), so the
    cost model says lookup's runs pay and sessions speculate on lookup's tokens alone."""

    def extend(self, tokens):
        time.sleep(0.01)  # well above a loopback round trip
        return super().extend(tokens)


@pytest.fixture(scope="module")
def flat_cloud():
    with cloud_thread(lambda: FlatToy(toy_target()._table), max_sessions=MAX_SESSIONS) as server:
        yield server


@pytest.fixture
def lookup_runs(monkeypatch) -> list[int]:
    """Counts the times sessions start speculating on lookup's tokens alone."""
    runs: list[int] = []
    decide = Controller.decide

    def counting(self, lookup_run=0, remaining=None):
        before = self.lookup_only
        mode = decide(self, lookup_run, remaining)
        runs.extend([1] if self.lookup_only and not before else [])
        return mode

    monkeypatch.setattr(Controller, "decide", counting)
    return runs


def reference(params: SamplingParams, verify: VerifyConfig, n: int) -> list[int]:
    return generate_autoregressive(toy_target(), PROMPT, params, verify, np.random.default_rng(0), n).token_ids


@pytest.mark.parametrize("controller", [SWITCHING, None], ids=["switching", "fixed"])
@pytest.mark.parametrize("method, mode", SPECULATIVE, ids=str)
def test_greedy_output_with_lookup_equals_target_only_greedy(cloud, method, mode, controller):
    params, verify = SamplingParams(temperature=0), VerifyConfig(mode=mode)
    config = EdgeConfig(method=method, params=params, verify=verify, max_new_tokens=30, chunk_len=3, max_lookahead=6,
                        controller=controller, lookup=LOOKUP)  # fmt: skip
    report = generate(address(cloud), toy_drafter(noise=1.5), PROMPT, config)
    assert report.token_ids == reference(params, verify, 30)
    assert report.looked_up > 0 and report.lookup_accepted <= report.looked_up <= report.drafted


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("flat", [False, True], ids=["toy", "flat"])
def test_gumbel_output_with_lookup_equals_ar_with_the_same_seed(cloud, flat_cloud, lookup_runs, seed, flat):
    params, verify = SamplingParams(temperature=1.0), VerifyConfig(mode="gumbel", seed=seed)
    server = flat_cloud if flat else cloud
    # On the toy cloud the fixed policy, which drafts from the first token (so lookup proposes
    # whatever the timing); on the flat one the controller, which speculates on lookup's runs.
    controller = SWITCHING if flat else None
    config = EdgeConfig(params=params, verify=verify, max_new_tokens=25, controller=controller, lookup=LOOKUP)
    report = generate(address(server), toy_drafter(noise=1.5), PROMPT, config)
    ar = generate(address(server), toy_drafter(), PROMPT, EdgeConfig(method=Method.AR, params=params, verify=verify, max_new_tokens=25))
    assert report.token_ids == ar.token_ids == reference(params, verify, 25)
    # On the flat cloud sessions speculate on lookup's tokens alone (on the toy one too, at times:
    # its curve is measured, and a loaded machine can flatten it).
    assert report.looked_up > 0 and (lookup_runs or not flat)


@pytest.mark.parametrize("mode", list(VerifyMode))
def test_greedy_output_with_speculation_on_lookups_tokens_alone_equals_target_only_greedy(flat_cloud, lookup_runs, mode):
    params, verify = SamplingParams(temperature=0), VerifyConfig(mode=mode)
    config = EdgeConfig(params=params, verify=verify, max_new_tokens=40, controller=ControllerConfig(window=4, judge_window=4, follow_batch=2), lookup=LOOKUP)
    report = generate(address(flat_cloud), toy_drafter(noise=1.5), PROMPT, config)
    assert report.token_ids == reference(params, verify, 40)
    assert lookup_runs and report.decoded > 0 and report.lookup_accepted > 0


# Fixed chunks; the controller cutting chunks by the acceptance of lookup's tokens and the
# drafter's; and the controller letting the cloud decode the first tokens, then speculating.
POLICIES = {
    "fixed": None,
    # Chunks of up to 4: at a 10-ms pass and step and a 2-ms RTT, with lookup's prior acceptance of
    # 1/2, a 4-token run earns 1.875 / (V + 0.94 RTT), ~160 tokens/s against cloud decoding's 100; a
    # 2-token run's 1.5 / (V + 0.75 RTT), ~130, a pass calibrated at 12 ms and a 4-ms welcome (taken
    # as the RTT) bring below the 105 a switch needs (in one test order lookup runs never started).
    "lookup-runs": ControllerConfig(window=2, judge_window=2, max_chunk=4, max_lookahead=4, follow_batch=1),
    "adaptive": ControllerConfig(fallback=False, max_chunk=3, max_lookahead=4),
    "switching": ControllerConfig(window=2, judge_window=2, probe_every=2, max_probe_every=2, max_chunk=2, max_lookahead=4, follow_batch=1),
}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("mode", ["exact", "full", "topk"])
def test_sequences_with_lookup_converge_on_the_target_distribution(cloud, flat_cloud, lookup_runs, mode, policy):
    """One-hot draft rows for lookup's tokens, the drafter's rows for its own, mixed in chunks,
    rejected and accepted, and (on a cloud with a flat cost curve) speculation on lookup's tokens
    alone between stretches of cloud decoding: the sequences are the target's samples."""
    # Switching speculates from the 4th token on: its shadow (window 2) leaves out the first, the
    # cloud's prompt pass's.
    params, n = SamplingParams(temperature=1.0, top_k=3), 1500
    length = {"fixed": 4, "adaptive": 4, "lookup-runs": 5, "switching": 6}[policy]
    server = flat_cloud if policy == "lookup-runs" else cloud
    looked_up = np.zeros(2, dtype=int)  # tokens lookup proposed, and those accepted

    def sample(seed: int) -> tuple[int, ...]:
        verify = VerifyConfig(mode=mode, seed=seed, topk=3, n_candidates=2)
        # Lookup runs start where lookup proposes: let it match single tokens, so it proposes at once.
        lookup = LookupConfig(min_n=1, max_n=3) if policy == "lookup-runs" else LOOKUP
        config = EdgeConfig(method=Method.PICOSPEC, params=params, verify=verify, max_new_tokens=length, chunk_len=3,
                            max_lookahead=4, controller=POLICIES[policy], lookup=lookup)  # fmt: skip
        report = generate(address(server), toy_drafter(noise=1.5), PROMPT, config)
        looked_up[:] += (report.looked_up, report.lookup_accepted)
        return tuple(report.token_ids)

    counts: dict[tuple, int] = {}
    with ThreadPoolExecutor(CONCURRENT_EDGES) as edges:
        for tokens in edges.map(sample, range(n)):
            counts[tokens] = counts.get(tokens, 0) + 1
    assert sequence_pvalue(counts, sequence_distribution(toy_target(), PROMPT, params, length)) > ALPHA
    proposed, accepted = looked_up
    # Lookup proposed (where the drafter drafts too, only tokens it agrees with: about one run in
    # twelve with this toy pair), and its tokens were accepted and rejected.
    assert proposed > n / 20 and 0 < accepted < proposed
    assert (len(lookup_runs) > n / 10) == (policy == "lookup-runs")


def test_negative_control_lookup_tokens_shipped_with_a_wrong_draft_probability_fail_the_test(cloud, monkeypatch):
    """The convergence test has the power to see a wrong draft_probs row for lookup's tokens."""
    absorb = Drafter.absorb

    def with_wrong_rows(self, tokens, keep):
        chunk = absorb(self, tokens, keep)
        if chunk is None:
            return None
        rows = 0.5 * chunk.draft_probs + 0.5 / chunk.draft_probs.shape[1]  # claims q(x) ~ 0.6, not 1
        return DraftChunk(chunk.epoch, chunk.start, chunk.tokens, rows, chunk.confidences, chunk.looked_up)

    monkeypatch.setattr(Drafter, "absorb", with_wrong_rows)
    with pytest.raises(AssertionError, match="sequence_pvalue"):
        test_sequences_with_lookup_converge_on_the_target_distribution(cloud, None, [], "exact", "fixed")
