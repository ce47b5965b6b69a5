#!/bin/bash
# ar's per-token wall time against its compute, the cloud on core 1 and the edge on core 0, two code trees alternating:
# /work/main (session 35's code) and /work/wt-pipe (a throw-away patch that started the next decode step
# while gRPC sent the last token; not kept). The runs are stream_pipelining.jsonl.
PY=/work/main/.venv/bin/python
out=/work/runs/s36/ab_ar.jsonl
for i in 1 2 3 4; do
  for tree in /work/main /work/wt-pipe; do
    name=$(basename $tree)
    cd $tree
    PYTHONPATH=$tree $PY -m picospec.cli cloud --cores 1 --port 50061 > /tmp/cloud_$name.log 2>&1 &
    cpid=$!
    for t in $(seq 1 60); do grep -q -i "serving\|listening" /tmp/cloud_$name.log && break; sleep 1; done
    for j in 1 2 3; do
      for m in ar picospec; do
      PYTHONPATH=$tree taskset -c 0 $PY -m picospec.cli generate --method $m --cloud 127.0.0.1:50061 --json 2>/dev/null | \
        $PY -c "import json,sys; d=json.load(sys.stdin); d={k:d[k] for k in ['wall_s','ttft_s','cloud_busy_s','cloud_prefill_s','new_tokens','decoded','mode_switches']}; d['tree']='$name'; d['rep']=$i*10+$j; d['method']='$m'; print(json.dumps(d))" >> $out
      done
    done
    kill $cpid; wait $cpid 2>/dev/null
  done
done
