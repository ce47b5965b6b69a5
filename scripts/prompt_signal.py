"""How well the drafter predicts a prompt's own text, beside how well it agrees with the target's
greedy answer to it: could the prompt say, before any token, whether speculation will pay?

For each prompt (a spread of HumanEval and MT-bench): the target's greedy answer; the drafter
teacher-forced over prompt + answer; per prompt, its top-1 agreement with the next token and its
mean confidence over the last --tail tokens of the user's message (the chat template's own tokens
left out), and its agreement with the answer. One JSON object per prompt on stdout.

    python scripts/prompt_signal.py --prompts 16 --answer-tokens 96 > prompt_signal.jsonl
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from picospec.bench.forced import position_trace
from picospec.bench.workloads import load_workload
from picospec.models.registry import DEFAULT_DRAFT, model_path
from picospec.runners.load import load_runner
from picospec.sampling import SamplingParams

TEMPLATE_TAIL = 5  # Qwen's "<|im_end|>\n<|im_start|>assistant\n" after the user's message
GREEDY = SamplingParams(temperature=0.0)  # acceptance: does the drafter's argmax equal the next token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16, help="per workload, spread over its data set")
    parser.add_argument("--answer-tokens", type=int, default=96)
    parser.add_argument("--tail", type=int, default=64, help="the user message's last tokens judged")
    args = parser.parse_args()
    draft = load_runner(str(model_path(DEFAULT_DRAFT)))
    target = load_runner(str(model_path("target")))
    for workload in ("humaneval", "mtbench"):
        prompts = load_workload(workload)
        for prompt in prompts[:: max(1, len(prompts) // args.prompts)][: args.prompts]:
            tokens = draft.chat_tokens(prompt.text)
            message_len = len(draft.tokenize(prompt.text, add_special=False))
            end = len(tokens) - TEMPLATE_TAIL
            target.rollback(0)
            row, answer = target.prefill(tokens), []
            for _ in range(args.answer_tokens):
                answer.append(int(np.argmax(row)))
                row = target.extend([answer[-1]])[-1]
            draft.rollback(0)
            seq = tokens + answer
            logits = draft.extend(seq)  # (n, V): row i the logits for seq[i + 1]
            lo = max(end - min(message_len, args.tail), 1)
            judged = position_trace(logits[lo - 1 : end - 1], seq[lo:end], GREEDY)
            prompt_agree, prompt_conf = judged.acceptance, judged.confidence
            # from the answer's 2nd token: the first comes from the cloud's prompt pass, never drafted
            answer_agree = position_trace(logits[len(tokens) : -1], seq[len(tokens) + 1 :], GREEDY).acceptance
            print(json.dumps({
                "workload": workload, "id": prompt.prompt_id, "msg_len": message_len,
                "prompt_agree": float(prompt_agree.mean()), "prompt_conf": float(prompt_conf.mean()),
                "prompt_conf97": float((prompt_conf >= 0.97).mean()), "ans_agree": float(answer_agree.mean()),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
