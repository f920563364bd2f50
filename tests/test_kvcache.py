"""SharedKVCache against plain attention over each row's full, unpadded key sequence."""

import pytest
import torch

from xsteer.core import kvcache
from xsteer.core.kvcache import Level, SharedKVCache

KV, REP, D = 2, 3, 8  # key/value heads, query heads per KV head, head dim


def reference(q, keys, values, kpos, qpos, window, scale):
    """One row: q [H, q, D]; keys/values [KV, T, D] (all real); causal by position, optional window."""
    k = keys.repeat_interleave(REP, dim=0)
    v = values.repeat_interleave(REP, dim=0)
    s = (q @ k.transpose(-1, -2)) * scale
    allowed = kpos[None, :] <= qpos[:, None]
    if window is not None:
        allowed &= qpos[:, None] - kpos[None, :] < window
    s = s.masked_fill(~allowed, float("-inf"))
    return (s.softmax(-1) @ v).transpose(0, 1)  # [q, H, D]


class Model:
    """Each row's true history (keys, values, positions), kept beside the cache under test."""

    def __init__(self, n_layers):
        self.n_layers = n_layers
        self.hist = {}

    def row(self, r):
        return self.hist.setdefault(
            r,
            [[torch.empty(KV, 0, D), torch.empty(KV, 0, D)] for _ in range(self.n_layers)]
            + [torch.empty(0, dtype=torch.long)],
        )


def make_level(g, p, n_layers, pad):
    valid = torch.ones(g, p, dtype=torch.bool)
    for i in range(g):
        valid[i, : pad[i]] = False
    pos = (valid.long().cumsum(1) - 1).clamp_min(0)
    keys = [torch.randn(g, KV, p, D) for _ in range(n_layers)]
    values = [torch.randn(g, KV, p, D) for _ in range(n_layers)]
    return Level(keys, values, valid, pos, [])


def run(window, drop_plan, compact_at, q_sizes, seed=0):
    torch.manual_seed(seed)
    n_layers, rows = 2, 6
    # level A: one group of 5 tokens (a few-shot prefix); level B: three groups, left-padded, after A
    a = make_level(1, 5, n_layers, [0])
    b = make_level(3, 4, n_layers, [0, 2, 3])
    b.pos = torch.where(b.valid, b.pos + 5, 0)
    group_b = [0, 0, 1, 1, 2, 2]
    levels = [
        Level(a.keys, a.values, a.valid, a.pos, [0] * rows),
        Level(b.keys, b.values, b.valid, b.pos, group_b),
    ]
    cache = SharedKVCache(n_layers, rows, capacity=sum(q_sizes), levels=levels, compact_at=compact_at)
    truth = Model(n_layers)
    for r in range(rows):
        h = truth.row(r)
        for layer in range(n_layers):
            for lv in levels:
                g = lv.group_of_row[r]
                m = lv.valid[g]
                h[layer][0] = torch.cat([h[layer][0], lv.keys[layer][g][:, m]], dim=1)
                h[layer][1] = torch.cat([h[layer][1], lv.values[layer][g][:, m]], dim=1)
        h[-1] = torch.cat([a.pos[0], b.pos[group_b[r]][b.valid[group_b[r]]]])
    next_pos = torch.tensor([int(truth.row(r)[-1][-1]) + 1 for r in range(rows)])
    for step, q in enumerate(q_sizes):
        if step in drop_plan:
            keep = [i for i, r in enumerate(cache.live) if r not in drop_plan[step]]
            cache.keep(keep)
        live = cache.live
        n = len(live)
        # the first forward is a left-padded block (rows with fewer real tokens), the rest are decode steps
        n_real = [q - (i % 2 if q > 1 else 0) for i in range(n)]
        valid = torch.zeros(n, q, dtype=torch.bool)
        for i, k in enumerate(n_real):
            valid[i, q - k :] = True
        pos = torch.stack(
            [next_pos[r] + (valid[i].long().cumsum(0) - 1).clamp_min(0) for i, r in enumerate(live)]
        )
        cache.advance(valid, pos)
        for layer in range(n_layers):
            k, v = torch.randn(n, KV, q, D), torch.randn(n, KV, q, D)
            query = torch.randn(n, KV * REP, q, D)
            cache.update(k, v, layer)
            got = cache.attend(layer, query, 0.3, window)  # [n, q, H, D]
            for i, r in enumerate(live):
                h = truth.row(r)
                m = valid[i]
                h[layer][0] = torch.cat([h[layer][0], k[i][:, m]], dim=1)
                h[layer][1] = torch.cat([h[layer][1], v[i][:, m]], dim=1)
                kpos = torch.cat([h[-1], pos[i][m]])
                want = reference(query[i][:, m], h[layer][0], h[layer][1], kpos, pos[i][m], window, 0.3)
                torch.testing.assert_close(got[i][m], want, atol=1e-5, rtol=1e-5)
        for i, r in enumerate(live):
            h = truth.row(r)
            h[-1] = torch.cat([h[-1], pos[i][valid[i]]])
            next_pos[r] = int(h[-1][-1]) + 1
    return cache


@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("prefill", [1, 3, 12])  # decode-style merge (<= MERGE_MAX_QUERY) and materialised
def test_attention_equals_per_row_reference(window, prefill):
    run(window, {}, compact_at=0.25, q_sizes=[prefill, 1, 1, 1])


@pytest.mark.parametrize("compact_at", [0.0, 1.0])  # compact at once / never (dead rows stay in the buffers)
@pytest.mark.parametrize("window", [None, 4])
def test_rows_leaving(compact_at, window):
    cache = run(window, {2: {1, 4}, 4: {0, 2, 3}}, compact_at=compact_at, q_sizes=[3, 1, 1, 1, 1, 1, 12, 1])
    assert cache.live == [5]
    if compact_at == 0.0:
        assert cache._allocated == 1 and [lv.n_groups for lv in cache.levels] == [
            1,
            1,
        ]  # empty groups dropped
    else:
        assert cache._allocated == 6 and cache._slots == [5]


def test_level_from_cache_copies_nothing():
    cache = SharedKVCache(1, 2, capacity=4)
    cache.advance(torch.ones(2, 3, dtype=torch.bool), torch.arange(3).expand(2, 3))
    cache.update(torch.randn(2, KV, 3, D), torch.randn(2, KV, 3, D), 0)
    (level,) = cache.as_level([1, 1, 0])
    assert level.keys[0].data_ptr() == cache.own_k[0].data_ptr() and level.group_of_row == [1, 1, 0]
    assert level.keys[0].shape == (2, KV, 3, D) and level.dense


def test_capacity_and_shape_errors():
    cache = SharedKVCache(1, 2, capacity=2)
    with pytest.raises(RuntimeError, match="full"):
        cache.advance(torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.long))
    cache.advance(torch.ones(2, 1, dtype=torch.bool), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(RuntimeError, match="announced"):
        cache.update(torch.randn(3, KV, 1, D), torch.randn(3, KV, 1, D), 0)


def test_attention_outside_a_cache_is_refused():
    class M:
        layer_idx = 0

    with pytest.raises(RuntimeError, match="attending"):
        kvcache.attention(
            M(), torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4), None
        )
