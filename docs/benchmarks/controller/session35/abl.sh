#!/bin/bash
# Ablation at wan, T=0, current main; two legs of every row.
P=/work/main/.venv/bin/picospec
COMMON="--workloads humaneval,mtbench --prompts 4 --profiles wan --temperatures 0 --methods ar,picospec --verify exact --repeats 1 --max-tokens 128"
for leg in 1 2; do
  $P bench run $COMMON --policy fixed --chunk-len 4 --draft draft --out fixed4_kqm_$leg.jsonl > fixed4_kqm_$leg.log 2>&1
  $P bench run $COMMON --policy fixed --chunk-len 4 --out fixed4_q40_$leg.jsonl > fixed4_q40_$leg.log 2>&1
  $P bench run $COMMON --no-fallback --no-confidence --out ctl_mean_$leg.jsonl > ctl_mean_$leg.log 2>&1
  $P bench run $COMMON --no-fallback --out ctl_conf_$leg.jsonl > ctl_conf_$leg.log 2>&1
  $P bench run $COMMON --out default_$leg.jsonl > default_$leg.log 2>&1
  $P bench run $COMMON --lookup --out lookup_$leg.jsonl > lookup_$leg.log 2>&1
  echo "leg $leg done $(date)"
done
echo ALL_DONE
