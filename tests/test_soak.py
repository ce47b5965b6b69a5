"""The soak: edges generate without pause for PICOSPEC_SOAK_S seconds (`make soak`: 600) while the
link is reset, partitioned and healed, and the cloud is stopped and restarted at random; every
generation must complete with the tokens of an uninterrupted run. Skipped unless PICOSPEC_SOAK_S is set."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from picospec.edge.client import generate
from picospec.edge.config import Method
from picospec.edge.controller import ControllerConfig
from picospec.transport.netem import LinkEmulatorThread
from picospec.verify import VerifyMode
from test_edge import PROMPT, reference, toy_drafter, toy_target
from picospec.wire.liveness import Liveness
from test_faults import LINK, config_for, partition_mid_generation
from toy_cloud import FAST_LIVENESS
from clouds import cloud_thread

SOAK_S = float(os.environ.get("PICOSPEC_SOAK_S", "0"))
N_EDGES = 4


@pytest.mark.skipif(SOAK_S <= 0, reason="set PICOSPEC_SOAK_S (make soak) to run the soak")
def test_soak_under_resets_partitions_and_restarts():
    rng = np.random.default_rng(0)
    cloud = cloud_thread(toy_target, max_sessions=8, liveness=FAST_LIVENESS).start()
    port = cloud.port
    link = LinkEmulatorThread("127.0.0.1", 0, "127.0.0.1", port, LINK)
    link.start()
    stop, lock = threading.Event(), threading.Lock()
    done, lost, faults = [0], [], {"reset": 0, "partition": 0, "restart": 0}

    def edge(index: int) -> None:
        seed = index
        while not stop.is_set():
            seed += N_EDGES
            config = config_for(Method.PICOSPEC, VerifyMode.GUMBEL, 1.0, 60, ControllerConfig(), seed=seed)
            try:
                tokens = generate(f"127.0.0.1:{link.port}", toy_drafter(noise=1.5), PROMPT, config).token_ids
                ok = tokens == reference(config.params, config.verify, 60)
            except Exception as exc:  # a lost generation is what the soak counts
                ok, tokens = False, repr(exc)
            with lock:
                done[0] += 1
                if not ok:
                    lost.append((seed, tokens))

    edges = [threading.Thread(target=edge, args=(i,)) for i in range(N_EDGES)]
    for thread in edges:
        thread.start()
    deadline = time.monotonic() + SOAK_S
    try:
        while time.monotonic() < deadline:
            time.sleep(float(rng.uniform(1.0, 4.0)))
            fault = str(rng.choice(list(faults)))
            faults[fault] += 1
            if fault == "reset":
                link.reset()
            elif fault == "partition":
                link.partition()
                time.sleep(float(rng.uniform(0.2, 3.0)))
                link.heal()
            else:
                cloud.stop()
                time.sleep(float(rng.uniform(0.0, 1.0)))
                cloud = cloud_thread(toy_target, port=port, max_sessions=8, liveness=FAST_LIVENESS).start()
    finally:
        stop.set()
        for thread in edges:
            thread.join(120)
        link.stop()
        cloud.stop()
    print(f"soak: {SOAK_S:g} s, {done[0]} generations, faults {faults}, lost {len(lost)}")
    assert done[0] > 0 and not lost, lost[:3]


@pytest.mark.skipif(SOAK_S <= 0, reason="set PICOSPEC_SOAK_S (make soak) to run the soak")
@pytest.mark.parametrize("method", [Method.PICOSPEC, Method.AR])
def test_a_10_s_partition_is_detected_within_the_default_bound_and_survived(method):
    """The default keepalive (5 s + 5 s): detected within 10 s on both sides, survived after healing."""
    liveness = Liveness()
    edge_detect, cloud_detect, report, config = partition_mid_generation(method, liveness, partition_s=10.0, n_tokens=200)
    assert edge_detect < liveness.bound_s + 1.0 and cloud_detect < liveness.bound_s + 1.0
    assert report.token_ids == reference(config.params, config.verify, 200) and report.resumes >= 1
