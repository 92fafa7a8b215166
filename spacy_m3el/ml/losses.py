"""Training objectives: unit-consistent cross-entropy, intra-modal contrastive loss and the
logit adjustment by training frequency."""

import math
from typing import Mapping, Optional

import torch
from torch.nn import functional as F

from .layers import NEG_INF


def masked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, valid: Optional[torch.Tensor] = None
) -> Optional[torch.Tensor]:
    """Cross-entropy over the valid columns of each row.

    logits (Tensor[B, N]): scores.
    labels (LongTensor[B]): gold column per row.
    valid (Optional[BoolTensor[B, N]]): usable (row, column) pairs.
    RETURNS (Optional[Tensor]): mean loss over rows whose gold column is valid
        and that have at least one other valid column; None if there are none.
    """
    if valid is None:
        return F.cross_entropy(logits, labels)
    rows = torch.arange(labels.shape[0], device=labels.device)
    usable = valid[rows, labels] & (valid.sum(dim=1) > 1)
    if not bool(usable.any()):
        return None
    masked = logits.masked_fill(~valid, NEG_INF)
    return F.cross_entropy(masked[usable], labels[usable])


def intra_modal_contrastive(
    mentions: torch.Tensor,
    entities: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 0.03,
    inter_weight: float = 1.0,
    intra_weight: float = 0.8,
    mention_valid: Optional[torch.Tensor] = None,
    entity_valid: Optional[torch.Tensor] = None,
) -> Optional[torch.Tensor]:
    """InfoNCE with inter-source and inner-source negatives (M3EL's ICL).

    For mention i with gold entity e = labels[i], the mention-anchored loss
    contrasts (m_i, e) against m_i with the other entities (inter-source,
    weight ``inter_weight``) and against the mentions of other entities
    (inner-source, weight ``intra_weight``); the entity-anchored loss is the
    mirror image. Unlike the reference code, the anchor's similarity with
    itself is excluded (not set to a logit of 0) and other mentions of the
    same entity are never negatives.

    mentions (Tensor[B, d]), entities (Tensor[N, d]): embeddings (normalised here).
    labels (LongTensor[B]): index of each mention's gold entity.
    RETURNS (Optional[Tensor]): the loss, or None if no pair is usable.
    """
    m = F.normalize(mentions, dim=-1)
    e = F.normalize(entities, dim=-1)
    batch, n_entities = m.shape[0], e.shape[0]
    device = m.device
    m_ok = (
        mention_valid
        if mention_valid is not None
        else torch.ones(batch, dtype=torch.bool, device=device)
    )
    e_ok = (
        entity_valid
        if entity_valid is not None
        else torch.ones(n_entities, dtype=torch.bool, device=device)
    )
    rows = m_ok & e_ok[labels]
    if int(rows.sum()) == 0:
        return None
    same_entity = labels.unsqueeze(0) == labels.unsqueeze(1)  # [B, B]
    eye_b = torch.eye(batch, dtype=torch.bool, device=device)
    eye_n = torch.eye(n_entities, dtype=torch.bool, device=device)

    s_me = inter_weight * (m @ e.T) / temperature  # [B, N]
    s_mm = intra_weight * (m @ m.T) / temperature  # [B, B]
    s_ee = intra_weight * (e @ e.T) / temperature  # [N, N]

    # Mention-anchored: columns are all entities, then the mentions of other entities.
    mm_ok = ~same_entity & m_ok.unsqueeze(0)
    logits_m = torch.cat(
        [s_me.masked_fill(~e_ok.unsqueeze(0), NEG_INF), s_mm.masked_fill(~mm_ok, NEG_INF)], dim=1
    )
    loss_m = F.cross_entropy(logits_m[rows], labels[rows])

    # Entity-anchored (one row per mention): its mention, mentions of other entities,
    # other entities.
    s_em = s_me.T[labels]  # [B, B]: row i = gold entity of i against every mention
    em_ok = (eye_b | ~same_entity) & m_ok.unsqueeze(0)
    ee_rows = s_ee[labels]  # [B, N]
    ee_ok = ~eye_n[labels] & e_ok.unsqueeze(0)
    logits_e = torch.cat(
        [s_em.masked_fill(~em_ok, NEG_INF), ee_rows.masked_fill(~ee_ok, NEG_INF)], dim=1
    )
    targets = torch.arange(batch, device=device)
    loss_e = F.cross_entropy(logits_e[rows], targets[rows])
    return (loss_m + loss_e) / 2


def frequency_bias(counts: Mapping[str, int], weight: float, kb_id: str) -> float:
    """``weight * log(1 + count)``: the logit adjustment of an entity that ``counts``
    training mentions name (Menon et al., 2021), so the score need not learn how often
    an entity is the answer and an entity without training mentions is not ranked
    below its seen siblings for that reason alone."""
    return weight * math.log1p(counts.get(kb_id, 0))
