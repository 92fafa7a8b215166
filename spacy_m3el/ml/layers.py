"""The matching units of M3EL as PyTorch modules.

Shapes: P pairs (or n items), L/K token positions, h the hidden width.
Every unit takes boolean masks (True = real position) so padding never
receives attention weight, unlike the reference implementation.
"""

from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import nn

AlignmentFactory = Callable[[int], nn.Module]
NEG_INF = -1e9


def grouped_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` where a is [n, G, M, k] (or [1, G, M, k]) and b [n, 1, k, N] (one b per
    group of a's rows), computed as one [n, G*M, k] @ [n, k, N] product: broadcasting
    would copy b G times."""
    if a.dim() == 4 and b.dim() == 4 and b.shape[1] == 1 and a.shape[1] > 1:
        _, groups, rows, _ = a.shape
        product = torch.matmul(a.reshape(a.shape[0], groups * rows, -1), b[:, 0])
        return product.view(-1, groups, rows, b.shape[-1])
    return torch.matmul(a, b)


def take_rows(x: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
    """The rows of x scored per mention: ``x[index]`` ([n, C, ...]), or with index None
    (every mention against every row) all of x as [1, N, ...], broadcast, not copied."""
    return x.unsqueeze(0) if index is None else x[index]


def pair_dot(m: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Dot products [n, C] of m [n, h] with e [n, C, h] (or [1, C, h]: one GEMM)."""
    if e.shape[0] == 1:
        return m @ e[0].transpose(0, 1)
    return torch.einsum("nh,nch->nc", m, e)


def masked_mean(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean over dim -2 of x [..., L, h] counting only positions where mask [..., L]
    (broadcast to x's leading dims) is True."""
    if mask is None:
        return x.mean(dim=-2)
    weights = mask.to(x.dtype).unsqueeze(-2)
    return (weights @ x).squeeze(-2) / weights.sum(dim=-1).clamp(min=1.0)


def outer_attention_weights(
    query: torch.Tensor, key: torch.Tensor, key_mask: Optional[torch.Tensor], scale: float
) -> torch.Tensor:
    """Attention weights [C, L, n, K] of every query set (query [C, L, h]) over every key
    set (key [n, K, h], key_mask [n, K]).

    The logits of all pairs come from one [C*L, h] @ [h, n*K] product instead of n
    batched products over gathered copies of the queries (training scores every mention
    against every batch entity). A query set whose keys are all masked gets zero weights.
    """
    sets, length, width = query.shape
    n, k = key.shape[:2]
    queries, keys = (query * scale).reshape(sets * length, width), key.reshape(n * k, -1).t()
    if key_mask is None or bool(key_mask.all()):
        return (queries @ keys).view(sets, length, n, k).softmax(dim=-1)
    # The mask enters as an additive bias fused into the product: no pass over the
    # logits forward or backward.
    bias = torch.zeros(key_mask.shape, dtype=queries.dtype, device=queries.device)
    bias = bias.masked_fill(~key_mask, NEG_INF).reshape(1, n * k)
    weights = torch.addmm(bias, queries, keys).view(sets, length, n, k).softmax(dim=-1)
    has_keys = key_mask.any(dim=-1, keepdim=True)
    return weights if bool(has_keys.all()) else weights * has_keys.to(weights.dtype)


def pooled_outer_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_mask: Optional[torch.Tensor],
    query_mask: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Every query set (query [C, L, h]) attending over every key set (key and value
    [n, K, h], key_mask [n, K]), averaged over each set's real queries (query_mask
    [C, L]) -> [n, C, h']: the weights are averaged before they gather the values, so
    the [n, C, L, h'] outputs are never formed."""
    weights = outer_attention_weights(query, key, key_mask, scale)
    real = query_mask.to(weights.dtype)
    pooled = (
        torch.einsum("clnk,cl->cnk", weights, real) / real.sum(-1).clamp(min=1.0)[:, None, None]
    )
    return torch.einsum("cnk,nkh->nch", pooled, value)


class AttentionAlignment(nn.Module):
    """Scaled dot-product attention of queries over keys, padding keys masked.

    A query whose keys are all masked gets a zero vector instead of NaN.
    """

    def __init__(self, width: int, scale: bool = True):
        super().__init__()
        self.scale = width**-0.5 if scale else 1.0

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_mask: Optional[torch.Tensor] = None,
        query_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Values gathered per query; leading dims broadcast. query_mask is unused here
        (a padded query's output is ignored downstream) but part of the alignment call."""
        logits = grouped_matmul(query, key.transpose(-1, -2)) * self.scale
        if key_mask is None:
            return grouped_matmul(logits.softmax(dim=-1), value)
        mask = key_mask.unsqueeze(-2)
        weights = logits.masked_fill(~mask, NEG_INF).softmax(dim=-1) * mask.to(logits.dtype)
        return grouped_matmul(weights, value)

    def pooled(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_mask: Optional[torch.Tensor],
        query_mask: torch.Tensor,
    ) -> torch.Tensor:
        """The mean of :meth:`forward`'s output over the real queries (dim -2 removed)."""
        if _is_outer(query, key):
            mask = None if key_mask is None else key_mask[:, 0]
            return pooled_outer_attention(
                query[0], key[:, 0], value[:, 0], mask, query_mask[0], self.scale
            )
        return masked_mean(self(query, key, value, key_mask, query_mask), query_mask)


def _is_outer(query: torch.Tensor, key: torch.Tensor) -> bool:
    """Queries [1, C, L, h] against keys [n, 1, K, h]: every query set with every key set."""
    return query.dim() == 4 and key.dim() == 4 and query.shape[0] == 1 and key.shape[1] == 1


def attention_alignment(scale: bool = True) -> AlignmentFactory:
    """An alignment factory: width -> :class:`AttentionAlignment` of that width."""

    def make(width: int) -> nn.Module:
        return AttentionAlignment(width, scale=scale)

    return make


class IntraModalUnit(nn.Module):
    """TIMM / IIMM: coarse global-to-global plus fine global-to-local matching.

    G2G is the dot product of the normalised global vectors; G2L lets the
    entity's tokens attend over the mention's tokens, pools the attended
    context over the entity's real tokens and compares it with the entity's
    projected global vector. The unit score is
    ``global_weight * G2G + (1 - global_weight) * G2L`` (an equal mix); G2G is
    its bi-encoder term (``"g"`` on both sides), which retrieval searches.
    With ``late_interaction=False`` the unit is G2G alone (a dual encoder).
    """

    def __init__(
        self,
        global_width: int,
        token_width: int,
        hidden_width: int,
        alignment: AlignmentFactory,
        late_interaction: bool = True,
    ):
        super().__init__()
        self.late_interaction = late_interaction
        self.global_weight = 0.5 if late_interaction else 1.0
        if late_interaction:  # a dual encoder has no token-level parameters (nor cached tokens)
            self.query = nn.Linear(token_width, hidden_width)
            self.key = nn.Linear(token_width, hidden_width)
            self.value = nn.Linear(token_width, hidden_width)
            self.global_proj = nn.Linear(global_width, hidden_width)
            self.context_norm = nn.LayerNorm(hidden_width)
            self.align = alignment(hidden_width)

    def mention_side(self, global_: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
        if not self.late_interaction:
            return {"g": global_}
        return {"g": global_, "k": self.key(tokens), "v": self.value(tokens), "mask": mask}

    def entity_side(self, global_: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
        if not self.late_interaction:
            return {"g": global_}
        return {"g": global_, "q": self.query(tokens), "c": self.global_proj(global_), "mask": mask}

    def score(self, m: dict, e: dict, entity_index: Optional[torch.Tensor]) -> torch.Tensor:
        """Scores [n, C] of each mention i against the entities entity_index[i] ([n, C];
        None: every entity)."""
        bi_encoder, late = self.score_parts(m, e, entity_index)
        return bi_encoder if late is None else bi_encoder + late

    def score_parts(
        self, m: dict, e: dict, entity_index: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The weighted G2G (bi-encoder) and G2L (late interaction, or None) terms, each [n, C]."""
        g2g = pair_dot(m["g"], take_rows(e["g"], entity_index))
        if not self.late_interaction:
            return g2g, None
        # All of a mention's candidates align with its tokens in one call: queries
        # [n, C, L, h] ([1, N, L, h] for every entity) against keys [n, 1, K, h].
        queries, query_mask = take_rows(e["q"], entity_index), take_rows(e["mask"], entity_index)
        inputs = (queries, m["k"].unsqueeze(1), m["v"].unsqueeze(1), m["mask"].unsqueeze(1))
        if hasattr(self.align, "pooled"):  # an alignment that can pool without the outputs
            pooled = self.align.pooled(*inputs, query_mask)
        else:
            pooled = masked_mean(self.align(*inputs, query_mask), query_mask)
        context = self.context_norm(pooled)
        g2l = (take_rows(e["c"], entity_index) * context).sum(-1)
        return self.global_weight * g2g, (1 - self.global_weight) * g2l


class MultiHeadPooling(nn.Module):
    """Class-specific residual attention pooling (CSRA) over the token axis.

    Each head adds, to the masked mean, lambda times a per-channel softmax
    (temperature T) weighted sum of the tokens; the last head uses the max.
    The output is the average of the heads.
    """

    def __init__(
        self,
        temperatures: Sequence[float] = (2.0, 2.5, 3.5, 4.5),
        lam: float = 1.0,
        use_max: bool = True,
    ):
        super().__init__()
        self.temperatures = tuple(temperatures)
        self.lam = lam
        self.use_max = use_max

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        base = masked_mean(x, mask)
        keep = mask.unsqueeze(-1)
        heads = []
        for temperature in self.temperatures:
            weights = (x * temperature).masked_fill(~keep, NEG_INF).softmax(dim=1)
            heads.append(base + self.lam * (weights * x).sum(dim=1))
        if self.use_max:
            heads.append(base + self.lam * x.masked_fill(~keep, NEG_INF).max(dim=1).values)
        return torch.stack(heads).mean(dim=0)


class CrossModalUnit(nn.Module):
    """Cross-modal matching in both directions, computed per side.

    Textual-to-visual: the text global vector attends over the image patches
    and every patch attends over the text tokens. Visual-to-textual: the image
    global vector attends over the text tokens and every text token attends
    over the patches. Each direction pools [global'; tokens'] with CSRA,
    adds a gated copy of its global vector and normalises. Scores are dot
    products of the per-side contexts, so entity contexts can be cached.
    """

    def __init__(
        self,
        text_global_width: int,
        text_token_width: int,
        image_width: int,
        hidden_width: int,
        alignment: AlignmentFactory,
        csra_lambda: float = 1.0,
    ):
        super().__init__()
        self.text_global = nn.Linear(text_global_width, hidden_width)
        self.text_tokens = nn.Linear(text_token_width, hidden_width)
        self.image_global = nn.Linear(image_width, hidden_width)
        self.image_tokens = nn.Linear(image_width, hidden_width)
        self.match_proj = nn.Linear(hidden_width, hidden_width)
        self.align = alignment(hidden_width)
        self.pool = MultiHeadPooling(lam=csra_lambda)
        self.gate = nn.Linear(hidden_width, 1)
        self.norm = nn.LayerNorm(hidden_width)

    def _match(
        self,
        p: torch.Tensor,
        q: torch.Tensor,
        q_mask: Optional[torch.Tensor],
        p_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        attended = self.align(p, self.match_proj(q), q, q_mask, p_mask)
        return torch.relu(self.match_proj(attended))

    def _direction(
        self,
        g: torch.Tensor,
        other: torch.Tensor,
        other_mask: Optional[torch.Tensor],
        own: torch.Tensor,
        own_mask: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """g attends over the other modality's tokens, which attend over this modality's tokens."""
        g_prime = self._match(g.unsqueeze(1), other, other_mask)
        other_prime = self._match(other, own, own_mask, other_mask)
        sequence = torch.cat([g_prime, other_prime], dim=1)
        if other_mask is None:
            other_mask = torch.ones_like(other[..., 0], dtype=torch.bool)
        mask = torch.cat([torch.ones_like(other_mask[:, :1]), other_mask], dim=1)
        return self.norm(g * torch.tanh(self.gate(g)) + self.pool(sequence, mask))

    def side(
        self,
        text_global,
        text_tokens,
        text_mask,
        image_global,
        image_tokens,
        use_t2v: bool,
        use_v2t: bool,
    ) -> dict:
        """Per-item contexts {"t2v": [n, h], "v2t": [n, h]} for the enabled directions."""
        t = self.text_global(text_global)
        tokens = self.text_tokens(text_tokens)
        i = self.image_global(image_global)
        patches = self.image_tokens(image_tokens)
        out = {}
        if use_t2v:
            out["t2v"] = self._direction(t, patches, None, tokens, text_mask)
        if use_v2t:
            out["v2t"] = self._direction(i, tokens, text_mask, patches, None)
        return out
