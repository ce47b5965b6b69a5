"""The default model pair end to end: in-process reference loops and real edge/cloud processes."""

import numpy as np
import pytest

from picospec.decoding import Drafter, TargetVerifier, generate_autoregressive, generate_speculative
from picospec.edge.client import CloudError, generate
from picospec.edge.config import EdgeConfig, Method
from picospec.edge.controller import ControllerConfig
from picospec.launch import CloudProcessConfig, LocalCloud
from picospec.runners.toy import ToyRunner
from picospec.sampling import SamplingParams
from picospec.transport.netem import LinkProfile
from picospec.verify import VerifyConfig, VerifyMode

pytestmark = pytest.mark.real

PROMPTS = ["Write a Python function is_prime(n).", "Reverse a string in Python."]
GREEDY = SamplingParams(temperature=0)


@pytest.fixture
def runners(draft_runner, target_runner):
    yield draft_runner, target_runner
    draft_runner.rollback(0)
    target_runner.rollback(0)


_greedy_references: dict[str, list[int]] = {}


def greedy_reference(target, text: str) -> list[int]:
    """Target-only greedy output, computed once per prompt."""
    if text not in _greedy_references:
        prompt = target.chat_tokens(text)
        rng = np.random.default_rng(0)
        _greedy_references[text] = generate_autoregressive(target, prompt, GREEDY, VerifyConfig(), rng, 20).token_ids
    return _greedy_references[text]


@pytest.mark.parametrize(
    "mode, text", [("exact", PROMPTS[0]), ("exact", PROMPTS[1]), ("topk", PROMPTS[0]), ("full", PROMPTS[0]), ("gumbel", PROMPTS[1])]
)
def test_greedy_speculative_equals_greedy_target_on_the_real_pair(runners, mode, text):
    draft, target = runners
    config = VerifyConfig(mode=mode)
    reference = greedy_reference(target, text)
    drafter = Drafter(draft, GREEDY, config, np.random.default_rng(1))
    verifier = TargetVerifier(target, GREEDY, config, np.random.default_rng(2))
    result = generate_speculative(drafter, verifier, target.chat_tokens(text), 20, draft_len=4)
    assert result.token_ids == reference
    assert result.mean_accepted > 1  # the pair agrees often: a broken accept test would not


@pytest.fixture(scope="module")
def local_cloud(target_path):
    profile = LinkProfile(rtt_ms=20, bandwidth_mbps=100)
    with LocalCloud(CloudProcessConfig(model=str(target_path), deterministic=True), profile) as cloud:
        yield cloud


DEFAULT_CONTROLLER = ControllerConfig()
# Probes speculation after 4 tokens of cloud decoding, and falls back as soon as 4 tokens of it earn less.
SWITCHING = ControllerConfig(window=4, judge_window=4, probe_every=4, max_probe_every=4, follow_batch=2)


def run(cloud, draft, method, mode, params=GREEDY, seed=0, tokens=20, controller=DEFAULT_CONTROLLER):
    config = EdgeConfig(method=method, params=params, verify=VerifyConfig(mode=mode, seed=seed), max_new_tokens=tokens,
                        controller=controller)  # fmt: skip
    return generate(cloud.address, draft, draft.chat_tokens(PROMPTS[0]), config)


def test_all_methods_give_the_same_greedy_tokens_across_processes(local_cloud, draft_runner):
    """In the deterministic configuration: the controller (as it decides, and forced to switch),
    the fixed pipeline and the stop-and-wait methods all give ar's greedy tokens."""
    reference = run(local_cloud, draft_runner, Method.AR, VerifyMode.EXACT)
    assert reference.new_tokens == 20
    assert run(local_cloud, draft_runner, Method.PICOSPEC, VerifyMode.EXACT).token_ids == reference.token_ids
    for method, mode, controller in [(Method.PICOSPEC, VerifyMode.EXACT, SWITCHING), (Method.PICOSPEC, VerifyMode.TOPK, SWITCHING),
                                     (Method.PICOSPEC, VerifyMode.EXACT, None), (Method.SYNC, VerifyMode.EXACT, None),
                                     (Method.VANILLA, VerifyMode.FULL, None)]:  # fmt: skip
        report = run(local_cloud, draft_runner, method, mode, controller=controller)
        assert report.token_ids == reference.token_ids, (method, mode)
        assert report.rounds > 0 and report.bytes_up > 0
        if controller is SWITCHING:
            # It decoded on the cloud, then speculated (a probe after 4 tokens); whether it falls
            # back again depends on timing here (the toy tests force both directions).
            assert report.decoded > 1 and report.mode_switches >= 1


def test_gumbel_equals_cloud_only_decoding_with_the_same_seed(local_cloud, draft_runner):
    params = SamplingParams(temperature=0.8)
    reference = run(local_cloud, draft_runner, Method.AR, VerifyMode.GUMBEL, params, seed=5)
    for controller in (DEFAULT_CONTROLLER, SWITCHING, None):
        report = run(local_cloud, draft_runner, Method.PICOSPEC, VerifyMode.GUMBEL, params, seed=5, controller=controller)
        assert report.token_ids == reference.token_ids
    other = run(local_cloud, draft_runner, Method.AR, VerifyMode.GUMBEL, params, seed=6)
    assert other.token_ids != reference.token_ids  # the seed matters: the check above can fail


def test_the_cloud_refuses_a_drafter_with_another_vocabulary(local_cloud):
    toy = ToyRunner.create(5)
    config = EdgeConfig(method=Method.PICOSPEC, params=GREEDY, max_new_tokens=4)
    with pytest.raises(CloudError, match="FAILED_PRECONDITION.*vocabularies differ"):
        generate(local_cloud.address, toy, [1, 2], config)


RESUME_PROMPT = "Write a Python function that returns the n-th Fibonacci number iteratively."


def test_a_generation_resumed_after_link_resets_equals_the_uninterrupted_one(local_cloud, draft_runner):
    """Gumbel tokens stay identical across a reset every few tokens (deterministic configuration)."""
    prompt = draft_runner.chat_tokens(RESUME_PROMPT)
    params = SamplingParams(temperature=1.0)
    config = EdgeConfig(method=Method.PICOSPEC, params=params, verify=VerifyConfig(mode="gumbel", seed=3), max_new_tokens=60)
    reference = generate(local_cloud.address, draft_runner, prompt, config)
    seen, resets = [0], []

    def reset_every_6(tokens: list[int], source: str) -> None:
        seen[0] += len(tokens)
        if seen[0] >= 6 * (len(resets) + 1) and seen[0] < 60:
            resets.append(seen[0])
            local_cloud.link.reset()

    report = generate(local_cloud.address, draft_runner, prompt, config, on_tokens=reset_every_6)
    assert len(resets) >= 5 and report.resumes >= 5
    assert report.token_ids == reference.token_ids


def test_extending_the_committed_tokens_reproduces_the_uninterrupted_logits_bitwise(runners):
    """Why a resumed session evaluates the committed tokens with extend after the prompt pass
    (tests/test_faults.py checks that it does): in the deterministic configuration extend is
    batch-invariant and a prompt pass over prompt + committed tokens is not. (Before, a SIGKILLed
    cloud's resumed gumbel run parted from the uninterrupted one 1 token after the resumption.)"""
    _, target = runners
    prompt = target.chat_tokens(RESUME_PROMPT)
    committed = generate_autoregressive(target, prompt, GREEDY, VerifyConfig(), np.random.default_rng(0), 24).token_ids
    target.rollback(0)
    target.prefill(prompt)
    for token in committed:  # as the uninterrupted run evaluated them: one by one (or in small chunks)
        uninterrupted = target.extend([token])[-1]
    target.rollback(0)
    target.prefill(prompt)
    assert np.array_equal(target.extend(committed)[-1], uninterrupted)
    target.rollback(0)
    assert not np.array_equal(target.prefill(prompt + committed), uninterrupted)


COPY_PROMPT = "Repeat this code exactly, nothing else:\n\ndef area(width, height):\n    total = width * height\n    return total\n"


def test_prompt_lookup_gives_ar_s_tokens_on_the_real_pair(local_cloud, draft_runner):
    """Greedy (deterministic configuration) and gumbel: with lookup's one-hot drafts, fixed chunks
    (lookup proposes from the first token) and the controller, the tokens are ar's."""
    from picospec.edge.lookup import LookupConfig

    prompt = draft_runner.chat_tokens(COPY_PROMPT)
    for params, mode in ((GREEDY, VerifyMode.EXACT), (GREEDY, VerifyMode.TOPK), (SamplingParams(temperature=0.8), VerifyMode.GUMBEL)):
        verify = VerifyConfig(mode=mode, seed=3)
        reference = generate(local_cloud.address, draft_runner, prompt, EdgeConfig(method=Method.AR, params=params, verify=verify, max_new_tokens=30))
        for controller in (None, DEFAULT_CONTROLLER):
            config = EdgeConfig(params=params, verify=verify, max_new_tokens=30, controller=controller, lookup=LookupConfig())
            report = generate(local_cloud.address, draft_runner, prompt, config)
            assert report.token_ids == reference.token_ids, (mode, controller)
            if controller is None:
                assert report.looked_up > 0
