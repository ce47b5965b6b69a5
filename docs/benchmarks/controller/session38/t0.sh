#!/bin/bash
# T = 0 on main (ea53f94) at every near and far profile, two legs; pooled with key.repeat += 100 x leg.
PY=/work/main/.venv/bin/python
cd /work/main
for i in 1 2; do
  echo "leg $i start $(date +%T)"
  $PY -m picospec.cli bench run --workloads humaneval,mtbench --prompts 4 --profiles lan,wan,cellular,extreme \
    --temperatures 0 --methods ar,picospec --verify exact --repeats 1 --max-tokens 128 \
    --out /work/runs/s38/t0_$i.jsonl > /work/runs/s38/t0_$i.log 2>&1
  echo "leg $i rc=$? $(date +%T)"
done
echo ALL_DONE
