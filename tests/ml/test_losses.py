"""The training objectives of spacy_m3el.ml.losses, against plain loop implementations."""

import math

import pytest
import torch
from torch.nn import functional as F

from spacy_m3el.ml.losses import intra_modal_contrastive, masked_cross_entropy


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


# masked_cross_entropy ------------------------------------------------------


def masked_ce_by_loop(logits, labels, valid):
    """Mean over usable rows of -log softmax over the row's valid columns."""
    losses = []
    for row in range(logits.shape[0]):
        columns = [c for c in range(logits.shape[1]) if valid[row, c]]
        gold = int(labels[row])
        if gold not in columns or len(columns) < 2:
            continue
        values = [float(logits[row, c]) for c in columns]
        top = max(values)
        log_z = top + math.log(sum(math.exp(v - top) for v in values))
        losses.append(log_z - float(logits[row, gold]))
    return sum(losses) / len(losses) if losses else None


def test_masked_cross_entropy_equals_cross_entropy_when_all_valid():
    logits, labels = torch.randn(5, 7), torch.tensor([0, 3, 6, 2, 3])
    expected = F.cross_entropy(logits, labels)
    torch.testing.assert_close(masked_cross_entropy(logits, labels), expected)
    torch.testing.assert_close(
        masked_cross_entropy(logits, labels, torch.ones(5, 7, dtype=torch.bool)), expected
    )


def test_masked_cross_entropy_ignores_invalid_columns():
    logits, labels = torch.randn(4, 6), torch.tensor([0, 5, 2, 1])
    valid = torch.rand(4, 6) > 0.4
    valid[torch.arange(4), labels] = True
    valid[:, 3] = False
    loss = masked_cross_entropy(logits, labels, valid)
    assert loss == pytest.approx(masked_ce_by_loop(logits, labels, valid), rel=1e-5)
    changed = logits.clone()
    changed[~valid] = torch.randn(int((~valid).sum())) * 100
    torch.testing.assert_close(masked_cross_entropy(changed, labels, valid), loss)


def test_masked_cross_entropy_skips_rows_whose_gold_is_invalid():
    logits, labels = torch.randn(4, 5), torch.tensor([0, 3, 2, 4])
    valid = torch.ones(4, 5, dtype=torch.bool)
    valid[1, 3] = False  # row 1's gold is unusable
    valid[2] = torch.tensor(
        [False, False, True, False, False]
    )  # row 2: only its gold, nothing to contrast
    loss = masked_cross_entropy(logits, labels, valid)
    torch.testing.assert_close(loss, F.cross_entropy(logits[[0, 3]], labels[[0, 3]]))
    assert loss == pytest.approx(masked_ce_by_loop(logits, labels, valid), rel=1e-5)
    # A skipped row gets no gradient.
    logits.requires_grad_(True)
    masked_cross_entropy(logits, labels, valid).backward()
    assert torch.equal(logits.grad[1], torch.zeros(5)) and torch.equal(
        logits.grad[2], torch.zeros(5)
    )
    assert torch.equal(logits.grad[~valid], torch.zeros(int((~valid).sum())))


def test_masked_cross_entropy_returns_none_when_nothing_is_usable():
    logits, labels = torch.randn(3, 4), torch.tensor([0, 1, 2])
    assert masked_cross_entropy(logits, labels, torch.zeros(3, 4, dtype=torch.bool)) is None
    gold_only = torch.zeros(3, 4, dtype=torch.bool)
    gold_only[torch.arange(3), labels] = True
    assert masked_cross_entropy(logits, labels, gold_only) is None
    no_gold = torch.ones(3, 4, dtype=torch.bool)
    no_gold[torch.arange(3), labels] = False
    assert masked_cross_entropy(logits, labels, no_gold) is None


# intra_modal_contrastive ---------------------------------------------------


def contrastive_by_loop(m, e, labels, tau, alpha, beta, m_ok=None, e_ok=None):
    """M3EL's ICL written anchor by anchor.

    For mention i with gold entity g (rows where mention i and entity g are valid):
    - mention anchor: positive alpha*s(m_i, e_g)/tau; denominator over every valid
      entity (alpha) and every valid mention of another entity (beta);
    - entity anchor: positive alpha*s(e_g, m_i)/tau; denominator over m_i, every
      valid mention of another entity (alpha) and every other valid entity (beta).
    The anchor itself and other mentions of the same entity are never in a denominator.
    """
    m = [v / v.norm() for v in m]
    e = [v / v.norm() for v in e]
    labels = [int(x) for x in labels]
    m_ok = [True] * len(m) if m_ok is None else [bool(x) for x in m_ok]
    e_ok = [True] * len(e) if e_ok is None else [bool(x) for x in e_ok]

    def sim(a, b, weight):
        return weight * float(a @ b) / tau

    def nll(positive, terms):
        top = max(terms)
        return top + math.log(sum(math.exp(t - top) for t in terms)) - positive

    loss_m, loss_e = [], []
    for i, g in enumerate(labels):
        if not (m_ok[i] and e_ok[g]):
            continue
        others = [k for k in range(len(m)) if m_ok[k] and labels[k] != g]
        terms = [sim(m[i], e[j], alpha) for j in range(len(e)) if e_ok[j]]
        terms += [sim(m[i], m[k], beta) for k in others]
        loss_m.append(nll(sim(m[i], e[g], alpha), terms))
        terms = [sim(e[g], m[k], alpha) for k in [i] + others]
        terms += [sim(e[g], e[j], beta) for j in range(len(e)) if e_ok[j] and j != g]
        loss_e.append(nll(sim(e[g], m[i], alpha), terms))
    if not loss_m:
        return None
    return (sum(loss_m) / len(loss_m) + sum(loss_e) / len(loss_e)) / 2


@pytest.mark.parametrize(
    "labels,n_entities,tau,alpha,beta",
    [
        ([0, 1, 2, 3], 4, 0.03, 1.0, 0.8),  # the paper's settings, one mention per entity
        ([0, 1, 1, 2, 0], 3, 0.5, 1.0, 0.8),  # duplicates
        ([2, 0, 2, 4, 1, 2], 7, 0.2, 1.3, 0.6),  # duplicates and hard-negative entities
    ],
)
def test_contrastive_matches_the_loop(labels, n_entities, tau, alpha, beta):
    m, e = torch.randn(len(labels), 8), torch.randn(n_entities, 8)
    labels = torch.tensor(labels)
    loss = intra_modal_contrastive(
        m, e, labels, temperature=tau, inter_weight=alpha, intra_weight=beta
    )
    assert loss.shape == ()
    assert float(loss) == pytest.approx(
        contrastive_by_loop(m, e, labels, tau, alpha, beta), rel=1e-4
    )


def test_contrastive_matches_the_loop_with_invalid_items():
    m, e = torch.randn(6, 8), torch.randn(5, 8)
    labels = torch.tensor([0, 1, 1, 3, 4, 2])
    m_ok = torch.tensor([True, True, False, True, True, True])
    e_ok = torch.tensor([True, True, True, True, False])  # mention 4's gold has no image
    loss = intra_modal_contrastive(
        m, e, labels, temperature=0.1, mention_valid=m_ok, entity_valid=e_ok
    )
    assert float(loss) == pytest.approx(
        contrastive_by_loop(m, e, labels, 0.1, 1.0, 0.8, m_ok, e_ok), rel=1e-4
    )


def test_contrastive_excludes_invalid_mentions_entirely():
    """A mention without an image is neither an anchor nor a negative: same loss as without it."""
    m, e = torch.randn(5, 8), torch.randn(4, 8)
    labels = torch.tensor([0, 1, 2, 3, 1])
    m_ok = torch.tensor([True, False, True, True, True])
    with_invalid = intra_modal_contrastive(m, e, labels, mention_valid=m_ok)
    torch.testing.assert_close(with_invalid, intra_modal_contrastive(m[m_ok], e, labels[m_ok]))
    moved = m.clone()
    moved[1] = torch.randn(8) * 10
    torch.testing.assert_close(
        intra_modal_contrastive(moved, e, labels, mention_valid=m_ok), with_invalid
    )


def test_contrastive_excludes_invalid_entities_as_negatives():
    m, e = torch.randn(3, 8), torch.randn(4, 8)
    labels = torch.tensor([0, 1, 2])
    e_ok = torch.tensor([True, True, True, False])  # a hard negative without an image
    loss = intra_modal_contrastive(m, e, labels, entity_valid=e_ok)
    torch.testing.assert_close(loss, intra_modal_contrastive(m, e[:3], labels))


def test_contrastive_is_none_without_valid_rows():
    m, e, labels = torch.randn(3, 8), torch.randn(3, 8), torch.tensor([0, 1, 2])
    assert (
        intra_modal_contrastive(m, e, labels, mention_valid=torch.zeros(3, dtype=torch.bool))
        is None
    )
    assert (
        intra_modal_contrastive(m, e, labels, entity_valid=torch.zeros(3, dtype=torch.bool)) is None
    )
    # Valid mentions only where the gold entity is invalid, and vice versa.
    m_ok = torch.tensor([True, False, False])
    e_ok = torch.tensor([False, True, True])
    assert intra_modal_contrastive(m, e, labels, mention_valid=m_ok, entity_valid=e_ok) is None
    some = intra_modal_contrastive(m, e, labels, mention_valid=torch.tensor([True, True, False]))
    assert some is not None and math.isfinite(float(some))


def unit(v):
    return v / v.norm()


def test_duplicate_gold_entities_are_not_negatives():
    """Two mentions of entity 0: moving one toward the other must not increase the loss.

    Mention 1 is rotated toward mention 0 in a plane orthogonal to every
    entity and to the other entity's mention, so all its other similarities
    stay fixed and only s(m0, m1) grows. If same-entity mentions were
    negatives (as in the reference code), the loss would grow with it.
    """
    d = 8
    basis = torch.eye(d)
    e = torch.stack(
        [
            unit(basis[0] + 0.5 * basis[1]),
            unit(basis[1] + 0.3 * basis[2]),
            unit(basis[2] - basis[3]),
        ]
    )
    shared = 0.6 * basis[0] + 0.2 * basis[2]
    m0 = shared + basis[4]
    m2 = 0.7 * basis[1] + 0.1 * basis[3]  # mention of entity 1
    labels = torch.tensor([0, 0, 1])
    settings = dict(temperature=0.1, inter_weight=1.0, intra_weight=0.8)
    losses, loop_losses_with_false_negatives = [], []
    for angle in torch.linspace(math.pi / 2, 0, 5):
        m1 = shared + torch.cos(angle) * basis[4] + torch.sin(angle) * basis[5]
        m = torch.stack([m0, m1, m2])
        losses.append(float(intra_modal_contrastive(m, e, labels, **settings)))
        # The same batch where the duplicate is a different entity: a true negative.
        loop_losses_with_false_negatives.append(contrastive_by_loop(m, e, [0, 2, 1], 0.1, 1.0, 0.8))
    for before, after in zip(losses, losses[1:]):
        assert after <= before + 1e-6
    assert losses[-1] == pytest.approx(losses[0], abs=1e-5)
    # Sanity check of the construction: a negative moved toward the anchor does raise the loss.
    assert loop_losses_with_false_negatives[-1] > loop_losses_with_false_negatives[0] + 0.1


def test_contrastive_gradient_is_finite_and_reaches_both_sides():
    m = torch.randn(4, 8, requires_grad=True)
    e = torch.randn(5, 8, requires_grad=True)
    loss = intra_modal_contrastive(
        m, e, torch.tensor([0, 1, 1, 3]), mention_valid=torch.tensor([True, True, True, False])
    )
    loss.backward()
    assert torch.isfinite(m.grad).all() and torch.isfinite(e.grad).all()
    assert torch.equal(m.grad[3], torch.zeros(8))  # the invalid mention
    assert m.grad[:3].abs().sum() > 0 and e.grad.abs().sum() > 0
