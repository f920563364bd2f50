"""A KV cache written in place, whose shared prefixes are stored once and read once per decode step.

Why not transformers' caches: ``DynamicCache`` concatenates every layer's whole cache on every step (3.4 GB
copied per step at 76 rows x 960 positions on SmolLM2), and ``StaticCache`` keeps one full copy of every
prompt per row, attends over its whole capacity with a 4-D mask, and cannot let rows leave. A λ grid is
the worst case for both: its rows share almost all of their context.

Layout, per layer:

* **levels** (shared, read-only): ``[G, kv_heads, P, head_dim]`` blocks, each read by every row of its group.
  A few-shot prefix is one level (one group, or one group per λ when the prompt is steered); the rest of
  each distinct prompt is another (one group per prompt) when only generated positions are steered.
  A level is nothing but the ``own`` buffers of the cache that prefilled it, so building one copies nothing.
* **own** (per row): ``[rows, kv_heads, capacity, head_dim]``, preallocated for the longest row and written in
  place: every live row appends at the same column each step (prompts are left-padded), so a decode step
  writes one column and copies nothing.

Attention (:func:`attention`, registered with transformers' ``AttentionInterface`` under
:data:`ATTENTION` and dispatched by the model's own attention modules):

* **decode** (few query tokens): each part is attended separately and the parts are merged exactly with their
  log-sum-exp (the FlashAttention/cascade-inference identity). A level is one batched matmul per layer
  over all rows of each group, ``[G, kv_heads, rows_in_group x q_heads_per_kv, head_dim] @ [G, kv_heads,
  head_dim, P]``, so a prefix is read from memory once per step however many rows share it, and no row ever
  holds a copy of it.
* **prefill** (many query tokens): the parts are gathered into one ``[rows, kv_heads, T, head_dim]`` tensor
  and handed to SDPA with a boolean mask, exactly what the dynamic path computes. Materialising once per
  prefill costs less memory traffic than the score matrices of a long query block would.

Rows leave with :meth:`SharedKVCache.keep`: a live-row index changes, nothing is copied; dead rows keep
costing only their share of the own-part attention until they make up ``compact_at`` of the buffer, when
the live rows are compacted once.

Positions are explicit (a position per cached slot), so sliding windows (Gemma 3) count positions, not
slots: padding between a level and the own part cannot shift a window.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformers.cache_utils import Cache, CacheLayerMixin

ATTENTION = "xsteer_shared_kv"  # the attention implementation name registered with transformers
MERGE_MAX_QUERY = 8  # query tokens up to which attention merges the parts instead of materialising them
COMPACT_AT = 0.25  # share of dead rows in the own buffers at which the live rows are compacted

_ACTIVE: contextvars.ContextVar[SharedKVCache | None] = contextvars.ContextVar(
    "xsteer_kv_cache", default=None
)


@dataclass
class Level:
    """A shared, read-only KV block: group ``g`` holds ``keys[layer][g]``; ``group_of_row`` maps rows to groups."""

    keys: list[Float[Tensor, "group kv_head slot head_dim"]]
    values: list[Float[Tensor, "group kv_head slot head_dim"]]
    valid: Bool[Tensor, "group slot"]
    pos: Int[Tensor, "group slot"]
    group_of_row: list[int]
    dense: bool | None = None  # every slot valid (no padding): attention needs no mask

    def __post_init__(self) -> None:
        if self.dense is None:
            self.dense = bool(self.valid.all())  # one sync per level, at creation

    def for_rows(self, rows: Sequence[int]) -> Level:
        """The same blocks, read by new rows: row ``i`` reads what row ``rows[i]`` read."""
        return Level(
            self.keys, self.values, self.valid, self.pos, [self.group_of_row[r] for r in rows], self.dense
        )

    @property
    def n_groups(self) -> int:
        return int(self.valid.shape[0])


class _Layer(CacheLayerMixin):
    """What transformers' mask helpers inspect on a cache layer; the data lives in :class:`SharedKVCache`."""

    def __init__(self, cache: SharedKVCache, sliding: bool):
        super().__init__()
        self._cache = cache
        self.is_sliding = sliding

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:  # pragma: no cover
        pass

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError  # SharedKVCache.update handles it

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self._cache.seq_length(), 0

    def get_seq_length(self) -> int:
        return self._cache.seq_length()

    def get_max_length(self) -> int:
        return -1


class SharedKVCache(Cache):
    """KV cache of ``rows`` sequences: shared ``levels`` then each row's own slots, written in place.

    Use: :meth:`advance` before each forward (the new tokens' validity and positions), run the forward
    inside :meth:`attending` (so :func:`attention` finds this cache), :meth:`keep` when rows leave.
    """

    def __init__(
        self,
        n_layers: int,
        rows: int,
        capacity: int,
        *,
        levels: Sequence[Level] = (),
        device: Any = "cpu",
        sliding: Sequence[bool] | None = None,
        compact_at: float | None = None,
    ):
        sliding = list(sliding) if sliding is not None else [False] * n_layers
        super().__init__(layers=[_Layer(self, s) for s in sliding])
        self.n_layers, self.rows, self.capacity = n_layers, rows, capacity
        self.levels = list(levels)
        self.device = torch.device(device)
        self.compact_at = COMPACT_AT if compact_at is None else compact_at
        self.own_k: list[Tensor | None] = [None] * n_layers
        self.own_v: list[Tensor | None] = [None] * n_layers
        self.own_valid = torch.zeros(rows, capacity, dtype=torch.bool, device=self.device)
        self.own_pos = torch.zeros(rows, capacity, dtype=torch.long, device=self.device)
        self.length = 0  # own columns written
        self.live = list(range(rows))  # row id (0..rows-1, fixed) of each live batch row
        self._slots = list(range(rows))  # own-buffer slot of each live batch row
        self._slot_t = torch.arange(rows, device=self.device)
        self._allocated = rows  # own-buffer slots in use (live or dead)
        self._q_len = 0
        self._own_dense = True  # no padding among the own columns written so far
        self._refresh_tables()

    # -- bookkeeping
    def seq_length(self) -> int:
        return max((lv.valid.shape[1] for lv in self.levels), default=0) + self.length

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seq_length()

    @property
    def n_live(self) -> int:
        return len(self.live)

    @property
    def _compact(self) -> bool:
        """Live rows occupy slots 0..n-1 in order: the own buffers can be sliced instead of indexed."""
        return self._slots == list(range(len(self._slots)))

    def _refresh_tables(self) -> None:
        """Per level, which live rows read which group, as padded [G, R] gather tables (host work, no sync)."""
        self._tables: list[tuple[int, Tensor | None, Tensor | None]] = []
        for lv in self.levels:
            members: list[list[int]] = [[] for _ in range(lv.n_groups)]
            for i, row in enumerate(self.live):
                members[lv.group_of_row[row]].append(i)
            width = max(1, max(len(m) for m in members))
            table = [m + [0] * (width - len(m)) for m in members]  # pads read row 0; their output is dropped
            where = [0] * len(self.live)
            for g, m in enumerate(members):
                for j, i in enumerate(m):
                    where[i] = g * width + j
            if where == list(range(len(where))) and len(where) == lv.n_groups * width:
                self._tables.append((width, None, None))  # rows already group-major, no pads: no gathers
            else:
                self._tables.append(
                    (
                        width,
                        torch.tensor(table, device=self.device).flatten(),
                        torch.tensor(where, device=self.device, dtype=torch.long),
                    )
                )

    def advance(
        self, valid: Bool[Tensor, "live q"], pos: Int[Tensor, "live q"], *, all_real: bool | None = None
    ) -> None:
        """Announce the next forward's tokens (one row per live row): which are real, and their positions.
        ``all_real`` says (without a device sync) that ``valid`` is all True."""
        q = valid.shape[1]
        if all_real is None:
            all_real = bool(valid.all())
        self._own_dense = self._own_dense and all_real
        if self.length + q > self.capacity:
            raise RuntimeError(f"KV cache full: {self.length} + {q} > capacity {self.capacity}")
        t0, t1 = self.length, self.length + q
        if self._compact:
            self.own_valid[: self.n_live, t0:t1] = valid
            self.own_pos[: self.n_live, t0:t1] = pos
        else:
            self.own_valid[:, t0:t1].index_copy_(0, self._slot_t, valid)
            self.own_pos[:, t0:t1].index_copy_(0, self._slot_t, pos)
        self._t0, self._q_len, self.length = t0, q, t1
        self._q_pos = pos
        self._masks: dict[Any, Tensor] = {}

    def keep(self, index: Sequence[int]) -> None:
        """Keep only these live rows (indices into the current live rows, in order)."""
        index = list(index)
        self.live = [self.live[i] for i in index]
        self._slots = [self._slots[i] for i in index]
        self._slot_t = torch.tensor(self._slots, device=self.device, dtype=torch.long)
        if self.n_live and 1 - self.n_live / self._allocated > self.compact_at:
            self._compact_rows()
        self._refresh_tables()

    def _compact_rows(self) -> None:
        """Move live rows to slots 0..n-1 (one copy of their used columns) and drop groups nobody reads."""
        t, sel = self.length, self._slot_t
        for layer in range(self.n_layers):
            for store in (self.own_k, self.own_v):
                old = store[layer]
                if old is None:
                    continue
                new = old.new_empty(len(sel), *old.shape[1:])
                new[:, :, :t] = old[:, :, :t].index_select(0, sel)
                store[layer] = new
        self.own_valid = self.own_valid.index_select(0, sel)
        self.own_pos = self.own_pos.index_select(0, sel)
        self._slots = list(range(len(sel)))
        self._slot_t = torch.arange(len(sel), device=self.device)
        self._allocated = len(sel)
        levels = []
        for lv in self.levels:
            used = sorted({lv.group_of_row[r] for r in self.live})
            if len(used) == lv.n_groups:
                levels.append(lv)
                continue
            new_of = {g: i for i, g in enumerate(used)}
            idx = torch.tensor(used, device=self.device)
            levels.append(
                Level(
                    [k.index_select(0, idx) for k in lv.keys],
                    [v.index_select(0, idx) for v in lv.values],
                    lv.valid.index_select(0, idx),
                    lv.pos.index_select(0, idx),
                    [new_of.get(g, 0) for g in lv.group_of_row],
                )
            )
        self.levels = levels

    def share_layers(self, src: SharedKVCache, layers: Sequence[int]) -> None:
        """Give every row ``src``'s row 0 keys and values at ``layers`` (written before this cache's forward,
        which must then not run those layers: they are the same for every row, e.g. below the first steered
        layer, and were computed once in ``src``)."""
        for layer in layers:
            for mine, theirs in ((self.own_k, src.own_k), (self.own_v, src.own_v)):
                block = theirs[layer]
                if block is None or block.shape[2] != self.capacity:
                    raise RuntimeError(f"layer {layer} of the source cache is not filled to this capacity")
                mine[layer] = block[:1].expand(self.rows, -1, -1, -1).clone()

    def as_level(self, group_of_row: Sequence[int]) -> list[Level]:
        """This cache's levels and its own part as levels for another cache (no copy): the returned levels
        are read by new rows, new row ``i`` reading what this cache's row ``group_of_row[i]`` held."""
        if not self._compact or self.n_live != self.rows:
            raise RuntimeError("only a cache whose rows all live in order can become a level")
        rows = list(group_of_row)
        t = self.length
        own = Level(
            [k[:, :, :t] for k in self.own_k],  # type: ignore[index]
            [v[:, :, :t] for v in self.own_v],  # type: ignore[index]
            self.own_valid[:, :t],
            self.own_pos[:, :t],
            rows,
        )
        return [lv.for_rows(rows) for lv in self.levels] + ([own] if t else [])

    @contextmanager
    def attending(self) -> Iterator[SharedKVCache]:
        """Route :func:`attention` to this cache for the forwards inside the block."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    # -- transformers' cache protocol
    def update(
        self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        n, heads, q, dim = key_states.shape
        if q != self._q_len or n != self.n_live:
            raise RuntimeError(
                f"forward of {n} rows x {q} tokens, but advance() announced {self.n_live} x {self._q_len}"
            )
        if self.own_k[layer_idx] is None:
            shape = (self.rows, heads, self.capacity, dim)
            self.own_k[layer_idx] = key_states.new_zeros(shape)
            self.own_v[layer_idx] = value_states.new_zeros(shape)
        t0, t1 = self._t0, self._t0 + q
        for store, new in ((self.own_k[layer_idx], key_states), (self.own_v[layer_idx], value_states)):
            if self._compact:
                store[:n, :, t0:t1].copy_(new)  # type: ignore[index]
            else:
                store[:, :, t0:t1].index_copy_(0, self._slot_t, new)  # type: ignore[index]
        return key_states, value_states

    def batch_select_indices(self, indices: Tensor) -> None:
        self.keep(indices.tolist())

    # -- attention
    def attend(
        self, layer: int, query: Float[Tensor, "live q_head q head_dim"], scale: float, window: int | None
    ) -> Float[Tensor, "live q q_head head_dim"]:
        if query.shape[2] <= MERGE_MAX_QUERY:
            return self._attend_merged(layer, query, scale, window)
        return self._attend_materialised(layer, query, scale, window)

    def _own_view(self, store: list[Tensor | None], layer: int) -> Tensor:
        own = store[layer]
        assert own is not None
        return (
            own[: self.n_live, :, : self.length]
            if self._compact
            else own[: self._allocated, :, : self.length]
        )

    def _memo(self, key: Any, make: Any) -> Any:  # a tensor, or None where nothing needs masking
        """A tensor that depends only on the current forward (masks, gather indices): made once, not per layer."""
        if key not in self._masks:
            self._masks[key] = make()
        return self._masks[key]

    def _own_allowed(self, window: int | None) -> Bool[Tensor, "slot q key"]:
        """Which own keys each query of the current forward may attend to, per own-buffer slot."""

        def make() -> Tensor:
            rows = self.n_live if self._compact else self._allocated
            t0, q, t1 = self._t0, self._q_len, self.length
            col = torch.arange(t1, device=self.device)
            here = (t0 + torch.arange(q, device=self.device))[:, None]  # each query's own column
            allowed = self.own_valid[:rows, None, :t1] & (col[None, :] <= here)[None]
            # A padding query sees only itself: a finite output that no real token ever reads.
            allowed = allowed | (col[None, :] == here)[None]
            if window is not None:
                pos = self.own_pos[:rows, :t1]
                allowed = allowed & (pos[:, t0:t1, None] - pos[:, None, :] < window)
            return allowed

        return self._memo(("own", window), make)

    def _group_index(self, i: int) -> Tensor:
        """Level ``i``'s group of each live row."""
        lv = self.levels[i]
        return self._memo(
            ("group", i), lambda: torch.tensor([lv.group_of_row[r] for r in self.live], device=self.device)
        )

    def _attend_merged(self, layer: int, query: Tensor, scale: float, window: int | None) -> Tensor:
        n, heads, q, dim = query.shape
        keys, values = self._own_view(self.own_k, layer), self._own_view(self.own_v, layer)
        rep = heads // keys.shape[1]
        levels = []
        for i, lv in enumerate(self.levels):
            width, table, where = self._tables[i]
            bias = self._memo(
                ("level", i, window, rep), lambda i=i, lv=lv: self._level_bias(i, lv, window, rep)
            )
            levels.append((lv.keys[layer], lv.values[layer], bias, table, where, width))
        own_bias = self._memo(("own-bias", window, rep), lambda: self._own_bias(window, rep, query.dtype))
        slots = None if self._compact else self._slot_t
        return _run_core(query, levels, (keys, values, own_bias, slots), scale)

    def _own_bias(self, window: int | None, rep: int, dtype: torch.dtype) -> Tensor | None:
        """Additive mask over the own part ([slots, 1, rep*q, t]), or None when every row sees every column."""
        if self._q_len == 1 and self._own_dense and window is None:
            return None
        allowed = self._own_allowed(window)  # [slots, q, t]
        rows, q, t = allowed.shape
        allowed = allowed[:, None, None].expand(rows, 1, rep, q, t).reshape(rows, 1, rep * q, t)
        return _bias(allowed, dtype)

    def _level_bias(self, i: int, lv: Level, window: int | None, rep: int) -> Tensor | None:
        """Additive mask over level ``i``: None, [G, 1, 1, P] (padding) or [G, 1, R*rep*q, P] (windows)."""
        dtype = lv.keys[0].dtype
        if window is None:
            return None if lv.dense else _bias(lv.valid[:, None, None, :], dtype)
        width, table, _ = self._tables[i]
        g, q = lv.n_groups, self._q_len
        qpos = (self._q_pos if table is None else self._q_pos.index_select(0, table)).view(g, width, 1, q, 1)
        allowed = lv.valid[:, None, None, None, :] & (qpos - lv.pos[:, None, None, None, :] < window)
        return _bias(allowed.expand(g, width, rep, q, -1).reshape(g, 1, width * rep * q, -1), dtype)

    def _attend_materialised(self, layer: int, query: Tensor, scale: float, window: int | None) -> Tensor:
        n, heads, q, dim = query.shape
        ks, vs, masks = [], [], []
        for i, lv in enumerate(self.levels):
            idx = self._group_index(i)
            ks.append(lv.keys[layer].index_select(0, idx))
            vs.append(lv.values[layer].index_select(0, idx))

            def level_mask(lv: Level = lv, idx: Tensor = idx) -> Tensor:
                allowed = lv.valid.index_select(0, idx)[:, None, :].expand(n, q, -1)
                if window is not None:
                    allowed = allowed & (
                        self._q_pos[:, :, None] - lv.pos.index_select(0, idx)[:, None, :] < window
                    )
                return allowed

            masks.append(self._memo(("level-mat", i, window), level_mask))
        own_k, own_v = self._own_view(self.own_k, layer), self._own_view(self.own_v, layer)
        allowed = self._own_allowed(window)
        if not self._compact:
            own_k, own_v, allowed = (t.index_select(0, self._slot_t) for t in (own_k, own_v, allowed))
        ks.append(own_k)
        vs.append(own_v)
        masks.append(allowed)
        keys, values = (torch.cat(t, dim=2) if len(t) > 1 else t[0] for t in (ks, vs))
        mask = self._memo(
            ("mat", window), lambda: torch.cat(masks, dim=2)[:, None] if len(masks) > 1 else masks[0][:, None]
        )
        out = F.scaled_dot_product_attention(
            query, keys, values, attn_mask=mask, scale=scale, enable_gqa=heads != keys.shape[1]
        )
        return out.transpose(1, 2).contiguous()


def _merged_core(
    query: Tensor,
    levels: list[tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None, int]],
    own: tuple[Tensor, Tensor, Tensor | None, Tensor | None],
    scale: float,
) -> Tensor:
    """Decode attention: each level and the own part attended separately, merged by log-sum-exp.

    ``levels``: (keys [G, kv, P, d], values, additive mask, gather table [G*R], row -> table slot [n], R);
    the table and its inverse are None when the live rows already are the table (group-major, no pads).
    ``own``: (keys [slots, kv, t, d], values, additive mask, slot of each live row or None when slots == rows).
    Pure tensor code, so that ``torch.compile`` can take it whole."""
    n, heads, q, dim = query.shape
    own_k, own_v, own_bias, slots = own
    kv_heads = own_k.shape[1]
    rep = heads // kv_heads
    # [n, kv_head, rep * q, dim]: the query heads that read one KV head side by side, so each part is plain
    # multi-head attention over the KV heads (GQA without repeat_kv)
    q5 = query.reshape(n, kv_heads, rep * q, dim)
    parts = []
    for keys, values, bias, table, where, width in levels:
        g = keys.shape[0]
        # all rows of a group in one matmul: the group's keys are read once, not once per row
        qg = q5 if table is None else q5.index_select(0, table)
        qg = qg.view(g, width, kv_heads, rep * q, dim).transpose(1, 2)
        out, lse = _part(qg.reshape(g, kv_heads, width * rep * q, dim), keys, values, bias, scale)
        unfolded = []
        for t in (out, lse):
            t = t.view(g, kv_heads, width, rep * q, t.shape[-1]).transpose(1, 2)
            t = t.reshape(g * width, kv_heads, rep * q, t.shape[-1])
            unfolded.append(t if where is None else t.index_select(0, where))
        parts.append((unfolded[0], unfolded[1]))
    qo = q5
    if slots is not None:  # dead rows' slots get a zero query: cheaper than gathering the live rows' KV
        qo = q5.new_zeros(own_k.shape[0], kv_heads, rep * q, dim).index_copy(0, slots, q5)
    out, lse = _part(qo, own_k, own_v, own_bias, scale)
    if slots is not None:
        out, lse = out.index_select(0, slots), lse.index_select(0, slots)
    parts.append((out, lse))
    merged = _merge(parts).to(query.dtype)  # [n, kv, rep*q, dim]
    return merged.view(n, heads, q, dim).transpose(1, 2).contiguous()


_core: Any = _merged_core
_compiled: dict[str, Any] = {}


def set_compiled(on: bool | str) -> None:
    """Run decode attention through ``torch.compile`` (``True``: inductor; or a backend name), or eagerly.

    Dynamic shapes: rows leave and the cache grows every step, which must not recompile."""
    global _core
    if not on:
        _core = _merged_core
        return
    backend = "inductor" if on is True else str(on)
    if backend not in _compiled:
        try:
            _compiled[backend] = torch.compile(_merged_core, dynamic=True, backend=backend)
        except Exception as e:  # an unknown backend, or no compiler at all
            _warn_eager(e)
            _compiled[backend] = _merged_core
    _core = _compiled[backend]


def _warn_eager(e: Exception) -> None:
    import warnings

    warnings.warn(f"torch.compile of the decode attention failed, running it eagerly: {e!r}", stacklevel=3)


def _run_core(*args: Any) -> Tensor:
    global _core
    if _core is _merged_core:
        return _merged_core(*args)
    try:
        return _core(*args)
    except Exception as e:  # a compiler or backend gap: eager computes the same thing
        _warn_eager(e)
        for backend, fn in _compiled.items():
            if fn is _core:
                _compiled[backend] = _merged_core
        _core = _merged_core
        return _merged_core(*args)


def _bias(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    # The dtype's minimum, not -inf: a part whose keys are all masked then has a finite log-sum-exp, so its
    # merge weight is exp(min - max) = 0 instead of NaN.
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
        ~allowed, torch.finfo(dtype).min
    )


def _part(
    query: Tensor, keys: Tensor, values: Tensor, bias: Tensor | None, scale: float
) -> tuple[Tensor, Tensor]:
    """Attention of ``query`` over one part's keys: (output normalised within the part, fp32 log-sum-exp).

    Heads match (GQA is folded into the query length). On a CPU, PyTorch's fused flash kernel (one pass over
    the keys, 4x faster than the unfused ops here); elsewhere the same in plain ops, in fp32."""
    if query.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, keys, values, 0.0, False, attn_mask=bias, scale=scale
        )
        return out, lse.float()[..., None]
    s = torch.matmul(query, keys.transpose(-1, -2)).float().mul_(scale)
    if bias is not None:
        s = s.add_(bias)
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    return torch.matmul(s.sub_(lse).exp_().to(values.dtype), values), lse


def _merge(parts: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Softmax over the union of the parts' keys, from each part's normalised output and log-sum-exp.

    Pairwise: (o1, l1) + (o2, l2) = (o2 + (o1 - o2) * sigmoid(l1 - l2), logaddexp(l1, l2)), which takes
    5 small ops per part (the per-op cost dominates at decode sizes)."""
    out, lse = parts[0][0].float(), parts[0][1]
    for k, (o, part_lse) in enumerate(parts[1:]):
        o = o.float()
        out = o + (out - o) * torch.sigmoid(lse - part_lse)
        if k < len(parts) - 2:
            lse = torch.logaddexp(lse, part_lse)
    return out


def attention(
    module: Any,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers attention function over the active :class:`SharedKVCache` (``key``/``value`` are
    already in it: the cache's ``update`` wrote them)."""
    cache = _ACTIVE.get()
    if cache is None:
        raise RuntimeError(
            f"attention implementation {ATTENTION!r} runs only inside SharedKVCache.attending()"
        )
    if kwargs.get("softcap") is not None:
        raise NotImplementedError(
            "attention logit soft-capping (Gemma 2) is not supported by the shared KV cache"
        )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return cache.attend(module.layer_idx, query, scale, sliding_window), None


def kv_bytes_per_token(n_layers: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    """Bytes one token's keys and values take across all layers."""
    return 2 * n_layers * n_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()
