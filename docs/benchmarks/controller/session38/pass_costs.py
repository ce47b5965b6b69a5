# What a pass over m tokens costs, in decode steps, beyond the controller's chunks of 16 (session 38).
# .venv/bin/python docs/benchmarks/controller/session38/pass_costs.py
import os, statistics, time
os.sched_setaffinity(0, {1})
from picospec.runners.load import load_runner
r = load_runner("target")
n = r.n_vocab
ctx = [(7*i+3) % n for i in range(64)]
r.rollback(0); r.prefill(ctx)
def t(m, reps=5):
    xs = []
    for _ in range(reps):
        s = time.perf_counter(); r.extend([(11*i+5) % n for i in range(m)]); xs.append(time.perf_counter()-s); r.rollback(len(ctx))
    return statistics.median(xs)
t(32,1)
d = t(1, 9)
print(f"decode {d*1000:.1f} ms")
for m in (2,4,8,12,16,17,20,24,28,32,33,40,48,64):
    v = t(m)
    print(f"V({m}) = {v/d:.2f} steps, per token {v/d/m:.3f}")
