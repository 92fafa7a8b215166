"""Shapes and masks of the matching units, the losses and the network."""
import math

import pytest
import torch
from torch.nn import functional as F

from spacy_m3el.ml.layers import AttentionAlignment, CrossModalUnit, IntraModalUnit, MultiHeadPooling, masked_mean
from spacy_m3el.ml.losses import intra_modal_contrastive, masked_cross_entropy

H = 8


def align(width):
    return AttentionAlignment(width)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def test_attention_ignores_masked_keys_and_handles_empty_rows():
    attention = AttentionAlignment(H)
    q, k, v = torch.randn(3, 4, H), torch.randn(3, 5, H), torch.randn(3, 5, H)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    out = attention(q, k, v, mask)
    assert out.shape == (3, 4, H)
    k2, v2 = k.clone(), v.clone()
    k2[~mask], v2[~mask] = 100.0, -100.0
    torch.testing.assert_close(attention(q, k2, v2, mask), out)
    assert torch.equal(out[2], torch.zeros(4, H))  # all keys masked: zeros, not NaN


def test_masked_mean_and_pooling_ignore_padding():
    x = torch.randn(2, 6, H)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(masked_mean(x, mask)[0], x[0, :3].mean(0))
    pool = MultiHeadPooling()
    out = pool(x, mask)
    x2 = x.clone()
    x2[0, 3:] = 1e4
    torch.testing.assert_close(pool(x2, mask), out)
    assert out.shape == (2, H)


def pad(tensor, extra, value):
    filler = torch.full((tensor.shape[0], extra) + tuple(tensor.shape[2:]), value, dtype=tensor.dtype)
    return torch.cat([tensor, filler], dim=1)


def test_intra_modal_unit_shapes_and_padding_invariance():
    unit = IntraModalUnit(global_width=6, token_width=5, hidden_width=H, alignment=align).eval()
    m_g, m_t, m_mask = torch.randn(3, 6), torch.randn(3, 4, 5), torch.ones(3, 4, dtype=torch.bool)
    e_g, e_t, e_mask = torch.randn(2, 6), torch.randn(2, 7, 5), torch.ones(2, 7, dtype=torch.bool)
    mi, ei = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 0, 1, 0])
    scores = unit.score(unit.mention_side(m_g, m_t, m_mask), unit.entity_side(e_g, e_t, e_mask), mi, ei)
    assert scores.shape == (4,)
    padded_m = unit.mention_side(m_g, pad(m_t, 3, 5.0), pad(m_mask, 3, False))
    padded_e = unit.entity_side(e_g, pad(e_t, 2, -5.0), pad(e_mask, 2, False))
    torch.testing.assert_close(unit.score(padded_m, padded_e, mi, ei), scores, atol=1e-5, rtol=1e-5)


def cross_side(unit, text_tokens, text_mask, patches):
    return unit.side(torch.randn(2, 6) * 0 + 1, text_tokens, text_mask, torch.ones(2, 5), patches, True, True)


def test_cross_modal_unit_attends_both_ways_and_ignores_padding():
    unit = CrossModalUnit(text_global_width=6, text_token_width=6, image_width=5, hidden_width=H, alignment=align).eval()
    tokens, mask, patches = torch.randn(2, 4, 6), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool), torch.randn(2, 3, 5)
    base = cross_side(unit, tokens, mask, patches)
    assert base["t2v"].shape == (2, H) and base["v2t"].shape == (2, H)
    new_patches = cross_side(unit, tokens, mask, patches + torch.randn_like(patches))
    new_tokens = tokens.clone()
    new_tokens[:, 0] += 3.0
    new_text = cross_side(unit, new_tokens, mask, patches)
    for direction in ("t2v", "v2t"):
        assert not torch.allclose(new_patches[direction], base[direction])  # reads the patches
        assert not torch.allclose(new_text[direction], base[direction])  # reads the text tokens
    padded = tokens.clone()
    padded[0, 3] = 99.0
    masked = cross_side(unit, padded, mask, patches)
    for direction in ("t2v", "v2t"):
        torch.testing.assert_close(masked[direction][0], base[direction][0])


def test_masked_cross_entropy():
    logits, labels = torch.randn(4, 5), torch.tensor([0, 3, 2, 4])
    torch.testing.assert_close(masked_cross_entropy(logits, labels), F.cross_entropy(logits, labels))
    valid = torch.ones(4, 5, dtype=torch.bool)
    valid[0, 1] = False  # an invalid column is left out of row 0
    valid[1, 3] = False  # row 1's gold is invalid: the row is skipped
    expected_rows = [F.cross_entropy(torch.cat([logits[0, :1], logits[0, 2:]])[None], torch.tensor([0]))]
    expected_rows += [F.cross_entropy(logits[i][None], labels[i][None]) for i in (2, 3)]
    torch.testing.assert_close(masked_cross_entropy(logits, labels, valid), torch.stack(expected_rows).mean())
    assert masked_cross_entropy(logits, labels, torch.zeros(4, 5, dtype=torch.bool)) is None


def contrastive_by_loop(m, e, labels, tau, alpha, beta):
    m, e = F.normalize(m, dim=-1), F.normalize(e, dim=-1)
    losses_m, losses_e = [], []
    for i, gold in enumerate(labels.tolist()):
        inter = [alpha * (m[i] @ e[j]) / tau for j in range(len(e))]
        inner = [beta * (m[i] @ m[k]) / tau for k in range(len(m)) if labels[k] != gold]
        losses_m.append(-(inter[gold] - torch.logsumexp(torch.stack(inter + inner), 0)))
        inter_e = [alpha * (e[gold] @ m[k]) / tau for k in range(len(m)) if k == i or labels[k] != gold]
        positive = alpha * (e[gold] @ m[i]) / tau
        inner_e = [beta * (e[gold] @ e[j]) / tau for j in range(len(e)) if j != gold]
        losses_e.append(-(positive - torch.logsumexp(torch.stack(inter_e + inner_e), 0)))
    return (torch.stack(losses_m).mean() + torch.stack(losses_e).mean()) / 2


def test_contrastive_matches_a_plain_loop_and_skips_duplicates():
    m, e = torch.randn(5, 4), torch.randn(3, 4)
    labels = torch.tensor([0, 1, 1, 2, 0])  # two mentions of entities 0 and 1
    loss = intra_modal_contrastive(m, e, labels, temperature=0.5, inter_weight=1.0, intra_weight=0.8)
    torch.testing.assert_close(loss, contrastive_by_loop(m, e, labels, 0.5, 1.0, 0.8))


def test_contrastive_respects_validity():
    m, e, labels = torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 1, 2])
    assert intra_modal_contrastive(m, e, labels, mention_valid=torch.zeros(3, dtype=torch.bool)) is None
    some = intra_modal_contrastive(m, e, labels, mention_valid=torch.tensor([True, True, False]))
    assert some is not None and math.isfinite(float(some))
