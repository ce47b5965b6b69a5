from picospec.edge.policy import ChunkPolicy

PIPELINE = ChunkPolicy(pipelined=True, chunk_len=4, max_lookahead=8, max_new_tokens=100)
STOP_AND_WAIT = ChunkPolicy(pipelined=False, chunk_len=4, max_lookahead=8, max_new_tokens=100)


def test_stop_and_wait_drafts_a_full_chunk_then_waits():
    assert STOP_AND_WAIT.can_draft(0, 3, 0) and not STOP_AND_WAIT.should_ship(0, 3, 0)
    assert not STOP_AND_WAIT.can_draft(0, 4, 0) and STOP_AND_WAIT.should_ship(0, 4, 0)
    assert not STOP_AND_WAIT.can_draft(0, 0, 4)  # a chunk in flight: wait for its verdict


def test_pipeline_ships_early_only_when_the_cloud_is_idle():
    assert PIPELINE.should_ship(0, 1, 0)  # nothing in flight: ship one token at once
    assert not PIPELINE.should_ship(0, 2, 3)  # the cloud is busy: keep building
    assert PIPELINE.should_ship(0, 4, 3)  # a full chunk always goes


def test_pipeline_lookahead_bounds_unverified_drafts():
    assert PIPELINE.can_draft(0, 3, 4)
    assert not PIPELINE.can_draft(0, 0, 8)
    assert not PIPELINE.can_draft(0, 4, 3)  # a full chunk must be shipped first


def test_no_drafting_beyond_the_token_budget():
    near_end = ChunkPolicy(pipelined=True, chunk_len=4, max_lookahead=8, max_new_tokens=10)
    assert not near_end.can_draft(8, 1, 1)
    assert near_end.should_ship(8, 1, 0)
    tail = ChunkPolicy(pipelined=False, chunk_len=4, max_lookahead=8, max_new_tokens=10)
    assert tail.should_ship(8, 2, 0)  # a short last chunk still goes out
