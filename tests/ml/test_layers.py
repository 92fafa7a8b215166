"""The matching units of spacy_m3el.ml.layers: shapes, masks and padding invariance.

Each unit is checked against a plain per-item re-computation that only ever
sees the real (unmasked) positions, so any leak of padding shows up as a
numeric difference.
"""

import math

import pytest
import torch
from torch.nn import functional as F

from spacy_m3el.ml.layers import (
    AttentionAlignment,
    CrossModalUnit,
    IntraModalUnit,
    MultiHeadPooling,
    masked_mean,
)

H = 8


def alignment(width):
    return AttentionAlignment(width)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def pad_right(tensor, extra, fill="random"):
    """Append `extra` positions along dim 1, with random content (or a constant)."""
    shape = (tensor.shape[0], extra) + tuple(tensor.shape[2:])
    if tensor.dtype == torch.bool:
        filler = torch.zeros(shape, dtype=torch.bool)
    elif fill == "random":
        filler = torch.randn(shape) * 10
    else:
        filler = torch.full(shape, float(fill))
    return torch.cat([tensor, filler], dim=1)


def random_mask(n, length, min_real=1):
    """Right-padded boolean masks with between min_real and length real positions."""
    lengths = torch.randint(min_real, length + 1, (n,))
    lengths[0] = length  # at least one row without padding
    return torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)


# masked_mean ---------------------------------------------------------------


def test_masked_mean_counts_only_real_positions():
    x = torch.randn(3, 5, H)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    out = masked_mean(x, mask)
    assert out.shape == (3, H)
    torch.testing.assert_close(out[0], x[0, :2].mean(0))
    torch.testing.assert_close(out[1], x[1].mean(0))
    assert torch.equal(out[2], torch.zeros(H))  # nothing real: zeros, not NaN
    torch.testing.assert_close(masked_mean(x, None), x.mean(1))


# AttentionAlignment --------------------------------------------------------


@pytest.mark.parametrize("scale", [True, False])
def test_attention_without_mask_is_scaled_dot_product_attention(scale):
    attention = AttentionAlignment(H, scale=scale)
    q, k, v = torch.randn(2, 3, H), torch.randn(2, 5, H), torch.randn(2, 5, 6)
    out = attention(q, k, v)
    assert out.shape == (2, 3, 6)
    factor = 1 / math.sqrt(H) if scale else 1.0
    expected = torch.softmax(q @ k.transpose(1, 2) * factor, dim=-1) @ v
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(attention(q, k, v, torch.ones(2, 5, dtype=torch.bool)), expected)


def test_attention_gives_masked_keys_zero_weight():
    attention = AttentionAlignment(H)
    q, k, v = torch.randn(4, 3, H), torch.randn(4, 6, H), torch.randn(4, 6, H)
    mask = torch.tensor(
        [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 1, 0, 1, 0, 1]],
        dtype=torch.bool,
    )
    out = attention(q, k, v, mask)
    assert out.shape == (4, 3, H)
    # Same result as attending over the real keys only.
    for row in range(4):
        real = mask[row]
        torch.testing.assert_close(
            out[row], attention(q[row : row + 1], k[row : row + 1, real], v[row : row + 1, real])[0]
        )
    # Changing the masked keys and values (even to huge values) changes nothing.
    k2, v2 = k.clone(), v.clone()
    k2[~mask] = torch.randn(int((~mask).sum()), H) * 1e3
    v2[~mask] = torch.randn(int((~mask).sum()), H) * 1e3
    torch.testing.assert_close(attention(q, k2, v2, mask), out)


def test_attention_all_masked_row_gives_zeros_and_finite_gradients():
    attention = AttentionAlignment(H)
    q = torch.randn(2, 3, H, requires_grad=True)
    k = torch.randn(2, 4, H, requires_grad=True)
    v = torch.randn(2, 4, H, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    out = attention(q, k, v, mask)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros(3, H))
    out.sum().backward()
    for tensor in (q, k, v):
        assert torch.isfinite(tensor.grad).all()
    assert torch.equal(v.grad[1], torch.zeros(4, H))  # masked values receive no gradient
    assert torch.equal(v.grad[0, 2:], torch.zeros(2, H))


# IntraModalUnit ------------------------------------------------------------


def make_intra(global_width=6, token_width=5):
    return IntraModalUnit(
        global_width=global_width, token_width=token_width, hidden_width=H, alignment=alignment
    ).eval()


def intra_pair_by_hand(unit, m_g, m_t, e_g, e_t):
    """(G2G + G2L) / 2 for one pair, from real tokens only."""
    q, k, v = unit.query(e_t), unit.key(m_t), unit.value(m_t)
    weights = torch.softmax(q @ k.T / math.sqrt(H), dim=-1)
    context = F.layer_norm(
        (weights @ v).mean(0),
        (H,),
        unit.context_norm.weight,
        unit.context_norm.bias,
        unit.context_norm.eps,
    )
    g2l = unit.global_proj(e_g) @ context
    return (m_g @ e_g + g2l) / 2


def test_intra_modal_unit_shapes_and_scores_by_hand():
    unit = make_intra()
    m_g, m_t, m_mask = torch.randn(3, 6), torch.randn(3, 7, 5), random_mask(3, 7)
    e_g, e_t, e_mask = torch.randn(4, 6), torch.randn(4, 9, 5), random_mask(4, 9)
    m_side, e_side = unit.mention_side(m_g, m_t, m_mask), unit.entity_side(e_g, e_t, e_mask)
    assert m_side["k"].shape == m_side["v"].shape == (3, 7, H)
    assert e_side["q"].shape == (4, 9, H) and e_side["c"].shape == (4, H)
    entity_index = torch.tensor(
        [[3, 0], [1, 2], [3, 3]]
    )  # two candidates per mention, one repeated
    with torch.no_grad():
        scores = unit.score(m_side, e_side, entity_index)
        assert scores.shape == (3, 2)
        expected = torch.tensor(
            [
                [
                    intra_pair_by_hand(unit, m_g[i], m_t[i, m_mask[i]], e_g[j], e_t[j, e_mask[j]])
                    for j in row
                ]
                for i, row in enumerate(entity_index.tolist())
            ]
        )
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_intra_modal_unit_is_invariant_to_extra_padding():
    unit = make_intra()
    m_g, m_t, m_mask = torch.randn(3, 6), torch.randn(3, 4, 5), random_mask(3, 4)
    e_g, e_t, e_mask = torch.randn(2, 6), torch.randn(2, 5, 5), random_mask(2, 5)
    ei = torch.tensor([[0, 1], [0, 1], [1, 0]])
    with torch.no_grad():
        base = unit.score(
            unit.mention_side(m_g, m_t, m_mask), unit.entity_side(e_g, e_t, e_mask), ei
        )
        # Padding with random content on the mention side, on the entity side, and on both.
        m_padded = unit.mention_side(m_g, pad_right(m_t, 3), pad_right(m_mask, 3))
        e_padded = unit.entity_side(e_g, pad_right(e_t, 4), pad_right(e_mask, 4))
        m_plain = unit.mention_side(m_g, m_t, m_mask)
        e_plain = unit.entity_side(e_g, e_t, e_mask)
        for m_side, e_side in ((m_padded, e_plain), (m_plain, e_padded), (m_padded, e_padded)):
            torch.testing.assert_close(unit.score(m_side, e_side, ei), base, atol=1e-5, rtol=1e-5)
        # The content of already-masked positions does not matter either.
        m_t2 = m_t.clone()
        m_t2[~m_mask] = 1e3
        torch.testing.assert_close(
            unit.score(unit.mention_side(m_g, m_t2, m_mask), e_plain, ei),
            base,
            atol=1e-5,
            rtol=1e-5,
        )


def test_intra_modal_unit_reads_the_real_tokens():
    unit = make_intra()
    m_g, m_t, m_mask = torch.randn(2, 6), torch.randn(2, 4, 5), torch.ones(2, 4, dtype=torch.bool)
    e_g, e_t, e_mask = torch.randn(2, 6), torch.randn(2, 5, 5), torch.ones(2, 5, dtype=torch.bool)
    ei = torch.tensor([[1], [0]])
    with torch.no_grad():
        base = unit.score(
            unit.mention_side(m_g, m_t, m_mask), unit.entity_side(e_g, e_t, e_mask), ei
        )
        changed = unit.score(
            unit.mention_side(m_g, m_t + torch.randn_like(m_t), m_mask),
            unit.entity_side(e_g, e_t, e_mask),
            ei,
        )
    assert not torch.allclose(changed, base)


# MultiHeadPooling ----------------------------------------------------------


def csra_by_hand(x, temperatures=(2.0, 2.5, 3.5, 4.5), lam=1.0):
    """CSRA on the real tokens x [L, h] of one item."""
    base = x.mean(0)
    heads = [base + lam * (torch.softmax(t * x, dim=0) * x).sum(0) for t in temperatures]
    heads.append(base + lam * x.max(0).values)
    return torch.stack(heads).mean(0)


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_multi_head_pooling_matches_csra_on_real_tokens(lam):
    pool = MultiHeadPooling(lam=lam)
    x = torch.randn(4, 6, H)
    mask = random_mask(4, 6)
    out = pool(x, mask)
    assert out.shape == (4, H)
    expected = torch.stack([csra_by_hand(x[i, mask[i]], lam=lam) for i in range(4)])
    torch.testing.assert_close(out, expected)


def test_multi_head_pooling_ignores_masked_positions():
    pool = MultiHeadPooling()
    x = torch.randn(3, 5, H)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 0, 1]], dtype=torch.bool)
    out = pool(x, mask)
    for content in (1e4, -1e4):  # would dominate the max head or the softmax heads
        x2 = x.clone()
        x2[~mask] = content
        torch.testing.assert_close(pool(x2, mask), out)
    torch.testing.assert_close(pool(pad_right(x, 3), pad_right(mask, 3)), out)


# CrossModalUnit ------------------------------------------------------------


TEXT_G, TEXT_T, IMAGE = 6, 7, 5


def make_cross():
    return CrossModalUnit(TEXT_G, TEXT_T, IMAGE, H, alignment).eval()


def cross_inputs(n=3, length=5, patches=4):
    return {
        "text_global": torch.randn(n, TEXT_G),
        "text_tokens": torch.randn(n, length, TEXT_T),
        "text_mask": random_mask(n, length, min_real=2),
        "image_global": torch.randn(n, IMAGE),
        "image_tokens": torch.randn(n, patches, IMAGE),
    }


def cross_side(unit, inputs, t2v=True, v2t=True):
    with torch.no_grad():
        return unit.side(**inputs, use_t2v=t2v, use_v2t=v2t)


def test_cross_modal_unit_shapes_and_switches():
    unit = make_cross()
    inputs = cross_inputs()
    both = cross_side(unit, inputs)
    assert set(both) == {"t2v", "v2t"}
    assert both["t2v"].shape == both["v2t"].shape == (3, H)
    assert set(cross_side(unit, inputs, v2t=False)) == {"t2v"}
    assert set(cross_side(unit, inputs, t2v=False)) == {"v2t"}
    torch.testing.assert_close(cross_side(unit, inputs, v2t=False)["t2v"], both["t2v"])


def changed(a, b):
    """Per-row: did the context change noticeably?"""
    return ((a - b).abs().amax(dim=-1) > 1e-4).tolist()


def test_cross_modal_both_directions_read_the_patches():
    unit = make_cross()
    inputs = cross_inputs()
    base = cross_side(unit, inputs)
    new_patches = dict(
        inputs, image_tokens=inputs["image_tokens"] + torch.randn_like(inputs["image_tokens"])
    )
    out = cross_side(unit, new_patches)
    assert changed(out["t2v"], base["t2v"]) == [True] * 3
    assert changed(out["v2t"], base["v2t"]) == [True] * 3  # with the image global vector held fixed


def test_cross_modal_both_directions_read_the_text_tokens():
    """Unlike the reference, whose patch branch collapsed to a function of the text CLS,
    t2v depends on the text tokens (not only on the text global vector)."""
    unit = make_cross()
    inputs = cross_inputs()
    base = cross_side(unit, inputs)
    tokens = inputs["text_tokens"].clone()
    tokens[:, 0] += 2 * torch.randn(3, TEXT_T)  # position 0 is real in every row
    out = cross_side(unit, dict(inputs, text_tokens=tokens))
    assert changed(out["t2v"], base["t2v"]) == [True] * 3  # text global vector held fixed
    assert changed(out["v2t"], base["v2t"]) == [True] * 3


def test_cross_modal_unit_ignores_masked_text_tokens():
    unit = make_cross()
    inputs = cross_inputs()
    inputs["text_mask"][1, 2:] = False  # row 1 has 2 real tokens
    base = cross_side(unit, inputs)
    tokens = inputs["text_tokens"].clone()
    tokens[~inputs["text_mask"]] = torch.randn(int((~inputs["text_mask"]).sum()), TEXT_T) * 100
    out = cross_side(unit, dict(inputs, text_tokens=tokens))
    for direction in ("t2v", "v2t"):
        torch.testing.assert_close(out[direction], base[direction], atol=1e-5, rtol=1e-5)
    padded = dict(
        inputs,
        text_tokens=pad_right(inputs["text_tokens"], 4),
        text_mask=pad_right(inputs["text_mask"], 4),
    )
    out = cross_side(unit, padded)
    for direction in ("t2v", "v2t"):
        torch.testing.assert_close(out[direction], base[direction], atol=1e-5, rtol=1e-5)


def test_cross_modal_unit_items_are_independent():
    """Per-side contexts: an item's context does not depend on the other items in its batch."""
    unit = make_cross()
    inputs = cross_inputs()
    base = cross_side(unit, inputs)
    single = cross_side(unit, {key: value[1:2] for key, value in inputs.items()})
    for direction in ("t2v", "v2t"):
        torch.testing.assert_close(single[direction][0], base[direction][1], atol=1e-5, rtol=1e-5)


def test_cross_modal_unit_gradients_reach_all_inputs():
    unit = make_cross().train()
    inputs = {
        key: value.requires_grad_(True) if value.dtype != torch.bool else value
        for key, value in cross_inputs().items()
    }
    out = unit.side(**inputs, use_t2v=True, use_v2t=True)
    (out["t2v"].pow(2).sum() + out["v2t"].pow(2).sum()).backward()
    for key in ("text_global", "text_tokens", "image_global", "image_tokens"):
        grad = inputs[key].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, key
    # Padded text tokens get no gradient.
    assert torch.equal(
        inputs["text_tokens"].grad[~inputs["text_mask"]],
        torch.zeros(int((~inputs["text_mask"]).sum()), TEXT_T),
    )


def test_grouped_matmul_equals_broadcasting_without_copying_the_shared_operand():
    import torch

    from spacy_m3el.ml.layers import grouped_matmul

    torch.manual_seed(0)
    a, b = torch.randn(3, 5, 4, 6), torch.randn(3, 1, 6, 7)
    torch.testing.assert_close(grouped_matmul(a, b), torch.matmul(a, b))
    c = torch.randn(3, 6, 7)
    torch.testing.assert_close(grouped_matmul(a[:, 0], c), torch.matmul(a[:, 0], c))


def test_grouped_matmul_broadcasts_one_query_group_over_every_key_set():
    from spacy_m3el.ml.layers import grouped_matmul

    a, b = torch.randn(1, 5, 4, 6), torch.randn(3, 1, 6, 7)
    torch.testing.assert_close(grouped_matmul(a, b), torch.matmul(a, b))


def _attention_inputs(sets=4, length=5, n=3, keys=6):
    query = torch.randn(sets, length, H, requires_grad=True)
    key = torch.randn(n, keys, H, requires_grad=True)
    value = torch.randn(n, keys, H, requires_grad=True)
    mask = random_mask(n, keys)
    mask[2] = False  # a mention whose keys are all masked
    return query, key, value, mask


@pytest.mark.parametrize("masked", [True, False])
def test_every_query_set_against_every_key_set_equals_the_gathered_attention(masked):
    """[1, C, L, h] queries against [n, 1, K, h] keys (training's all-pairs scores, one GEMM)
    give the values and gradients of the same queries gathered per mention."""
    attention = AttentionAlignment(H)
    query, key, value, mask = _attention_inputs()
    mask = mask if masked else None
    inputs = (key.unsqueeze(1), value.unsqueeze(1), None if mask is None else mask.unsqueeze(1))
    outer = attention(query.unsqueeze(0), *inputs)
    gathered = attention(query.unsqueeze(0).expand(3, -1, -1, -1).clone(), *inputs)
    assert outer.shape == gathered.shape == (3, 4, 5, H)
    torch.testing.assert_close(outer, gathered)
    if masked:
        assert torch.equal(outer[2], torch.zeros(4, 5, H))
    weights = torch.randn_like(outer)
    inputs = (query, key, value)
    grads = [torch.autograd.grad((out * weights).sum(), inputs) for out in (outer, gathered)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("outer", [True, False])
def test_pooled_attention_is_the_masked_mean_of_the_attended_values(outer):
    attention = AttentionAlignment(H)
    query, key, value, key_mask = _attention_inputs()
    query_mask = random_mask(4, 5)
    queries, query_masks = query.unsqueeze(0), query_mask.unsqueeze(0)
    if not outer:
        queries, query_masks = queries.expand(3, -1, -1, -1), query_masks.expand(3, -1, -1)
    inputs = (queries, key.unsqueeze(1), value.unsqueeze(1), key_mask.unsqueeze(1))
    pooled = attention.pooled(*inputs, query_masks)
    expected = masked_mean(attention(*inputs, query_masks), query_masks)
    assert pooled.shape == (3, 4, H)
    torch.testing.assert_close(pooled, expected)
    weights = torch.randn_like(pooled)
    inputs = (query, key, value)
    grads = [torch.autograd.grad((out * weights).sum(), inputs) for out in (pooled, expected)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
