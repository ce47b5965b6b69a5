#!/bin/bash
# T = 1 on main (ea53f94) at wan and cellular, two legs; pooled with key.repeat += 100 x leg.
PY=/work/main/.venv/bin/python
cd /work/main
for i in 1 2; do
  echo "leg $i start $(date +%T)"
  $PY -m picospec.cli bench run --workloads humaneval,mtbench --prompts 4 --profiles wan,cellular \
    --temperatures 1 --methods ar,picospec --verify exact --repeats 1 --max-tokens 128 \
    --out /work/runs/s38/t1_$i.jsonl > /work/runs/s38/t1_$i.log 2>&1
  echo "leg $i rc=$? $(date +%T)"
done
echo ALL_DONE
