#!/bin/bash
# A/B: HEAD (base, a worktree at /work/wt-base) against the patched tree (new, /work/main:
# git apply streamed_fallback_rate.patch), alternating legs. Legs pooled per arm with key.repeat += 100 x leg.
PY=/work/main/.venv/bin/python
i=0
for arm in base new new base; do
  i=$((i+1))
  tree=/work/main; [ $arm = base ] && tree=/work/wt-base
  cd $tree
  echo "leg $i $arm start $(date +%T)"
  PYTHONPATH=$tree $PY -m picospec.cli bench run --workloads humaneval,mtbench --prompts 4 --profiles wan,cellular \
    --temperatures 0 --methods ar,picospec --verify exact --repeats 1 --max-tokens 128 \
    --out ${OUT:-/work/runs/s37/ab}/${arm}_$i.jsonl > ${OUT:-/work/runs/s37/ab}/${arm}_$i.log 2>&1
  echo "leg $i $arm rc=$? $(date +%T)"
done
echo ALL_DONE
