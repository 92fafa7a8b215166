"""Log-domain Sinkhorn, the OT alignment and its distillation into a student attention."""

import pytest
import torch

from spacy_m3el.ml import transport
from spacy_m3el.ml.layers import AttentionAlignment
from spacy_m3el.ml.transport import (
    OTAlignment,
    OTSettings,
    auxiliary_losses,
    log_sinkhorn,
    row_stochastic,
)


def masks(rows, cols, n=5, m=7):
    row_mask = torch.tensor([[i < r for i in range(n)] for r in rows])
    col_mask = torch.tensor([[j < c for j in range(m)] for c in cols])
    return row_mask, col_mask


def test_sinkhorn_marginals_are_uniform_over_real_positions_and_padding_gets_no_mass():
    torch.manual_seed(0)
    row_mask, col_mask = masks(rows=(3, 5), cols=(4, 7))
    plan = log_sinkhorn(torch.rand(2, 5, 7) / 0.05, row_mask, col_mask, iterations=200).exp()
    for b, (n, m) in enumerate(((3, 4), (5, 7))):
        torch.testing.assert_close(plan[b].sum(-1)[:n], torch.full((n,), 1 / n), atol=1e-5, rtol=0)
        torch.testing.assert_close(plan[b].sum(-2)[:m], torch.full((m,), 1 / m), atol=1e-6, rtol=0)
        assert float(plan[b, n:].sum() + plan[b, :, m:].sum()) < 1e-12
    assert float(plan.sum()) == pytest.approx(2.0, abs=1e-5)


def test_few_iterations_leave_the_keys_exact_and_the_rows_approximate():
    torch.manual_seed(1)
    row_mask, col_mask = masks(rows=(5,), cols=(7,))
    plan = log_sinkhorn(torch.rand(1, 5, 7) / 0.05, row_mask, col_mask, iterations=3).exp()
    torch.testing.assert_close(plan.sum(-2), torch.full((1, 7), 1 / 7), atol=1e-6, rtol=0)
    assert float((plan.sum(-1) - 0.2).abs().max()) > 1e-4  # not converged: it is 3 iterations


def test_tolerance_stops_early_within_the_tolerance(monkeypatch):
    calls = []
    original = torch.logsumexp
    monkeypatch.setattr(
        transport.torch, "logsumexp", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    torch.manual_seed(2)
    row_mask, col_mask = masks(rows=(5,), cols=(7,))
    scores = torch.rand(1, 5, 7) / 0.5
    plan = log_sinkhorn(scores, row_mask, col_mask, iterations=500, tolerance=1e-4).exp()
    assert len(calls) < 3 * 500
    assert float((plan.sum(-1) - 0.2).abs().max()) <= 1e-4


@pytest.mark.parametrize("epsilon", [0.01, 0.05])
def test_small_epsilon_long_sequences_and_all_padding_stay_finite(epsilon):
    torch.manual_seed(3)
    query = torch.randn(3, 77, 16, requires_grad=True)
    key = torch.randn(3, 50, 16, requires_grad=True)
    query_mask = torch.ones(3, 77, dtype=torch.bool)
    query_mask[1] = False  # an item with no real query
    key_mask = torch.ones(3, 50, dtype=torch.bool)
    key_mask[2] = False  # an item with no real key
    key_mask[0, 40:] = False
    align = OTAlignment(16, OTSettings(epsilon=epsilon, iterations=20, cost="dot"))
    out = align(query * 30, key, key, key_mask, query_mask)  # large logits on purpose
    assert torch.isfinite(out).all()
    assert float(out[2].detach().abs().max()) == 0.0  # no keys: nothing gathered, like attention
    out.sum().backward()
    assert torch.isfinite(query.grad).all() and torch.isfinite(key.grad).all()


def test_the_plan_replaces_attention_weights_row_stochastic_over_real_keys():
    torch.manual_seed(4)
    query, key = torch.randn(2, 4, 8), torch.randn(2, 6, 8)
    key_mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    align = OTAlignment(8, OTSettings())
    weights = align(query, key, torch.eye(6).expand(2, 6, 6), key_mask)  # values = one-hot keys
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4))
    assert float(weights[0, :, 4:].abs().max()) == 0.0
    value = torch.randn(2, 6, 3)
    changed = value.clone()
    changed[0, 4:] = 1e3  # padded values never leak in
    torch.testing.assert_close(
        align(query, key, value, key_mask)[0], align(query, key, changed, key_mask)[0]
    )


def test_a_single_query_spreads_its_weight_over_all_keys():
    """One source row must give every key its mass: the plan is the mean over real keys."""
    torch.manual_seed(5)
    key_mask = torch.tensor([[True, True, True, False]])
    out = OTAlignment(8, OTSettings())(
        torch.randn(1, 1, 8), torch.randn(1, 4, 8), torch.eye(4)[None], key_mask
    )
    torch.testing.assert_close(out, torch.tensor([[[1 / 3, 1 / 3, 1 / 3, 0.0]]]))


def test_gradients_match_finite_differences():
    torch.manual_seed(6)
    query = torch.randn(2, 3, 4, dtype=torch.double, requires_grad=True)
    key = torch.randn(2, 5, 4, dtype=torch.double, requires_grad=True)
    value = torch.randn(2, 5, 2, dtype=torch.double, requires_grad=True)
    key_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    query_mask = torch.tensor([[True] * 3, [True, True, False]])
    for cost in ("cosine", "dot"):
        align = OTAlignment(4, OTSettings(epsilon=0.1, iterations=5, cost=cost))
        assert torch.autograd.gradcheck(
            lambda q, k, v, align=align: align(q, k, v, key_mask, query_mask), (query, key, value)
        )


def test_detach_plan_stops_gradients_through_the_plan():
    query, key = torch.randn(1, 3, 4, requires_grad=True), torch.randn(1, 5, 4)
    value = torch.randn(1, 5, 4, requires_grad=True)
    (OTAlignment(4, OTSettings(detach_plan=True))(query, key, value) ** 2).sum().backward()
    assert query.grad is None and value.grad is not None
    (OTAlignment(4, OTSettings())(query, key, value) ** 2).sum().backward()
    assert float(query.grad.abs().max()) > 0.0


def distilling(weight=1.0, predict_with="teacher"):
    settings = OTSettings(distillation_weight=weight, predict_with=predict_with, iterations=10)
    return OTAlignment(8, settings)


def test_distillation_loss_goes_down_and_the_student_approaches_the_plan():
    torch.manual_seed(7)
    align = distilling()
    query, key = torch.randn(16, 6, 8), torch.randn(16, 9, 8)
    key_mask = torch.rand(16, 9) > 0.2
    key_mask[:, 0] = True
    optimizer = torch.optim.Adam(align.student.parameters(), lr=0.01)
    teacher = align(query, key, torch.eye(9).expand(16, 9, 9), key_mask)
    losses = []
    for _ in range(150):
        align(query, key, key, key_mask)
        loss, count = auxiliary_losses(torch.nn.ModuleList([align]))
        assert count == 1
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    align.eval()
    align.settings = OTSettings(distillation_weight=1.0, predict_with="student", iterations=10)
    student = align(query, key, torch.eye(9).expand(16, 9, 9), key_mask)
    untrained = AttentionAlignment(8)(query, key, torch.eye(9).expand(16, 9, 9), key_mask)
    assert (student - teacher).abs().mean() < 0.5 * (untrained - teacher).abs().mean()


def test_distillation_never_changes_what_the_teacher_sees():
    query = torch.randn(2, 3, 8, requires_grad=True)
    align = distilling()
    align(query, torch.randn(2, 4, 8), torch.randn(2, 4, 8))
    loss, _ = auxiliary_losses(torch.nn.ModuleList([align]))
    loss.backward()
    assert query.grad is None
    assert all(p.grad is not None for p in align.student.parameters())
    assert align.pop_auxiliary_loss() is None  # collected once


def test_a_student_at_prediction_runs_no_sinkhorn(monkeypatch):
    align = distilling(predict_with="student").eval()
    monkeypatch.setattr(transport, "log_sinkhorn", lambda *a, **k: pytest.fail("Sinkhorn ran"))
    with torch.no_grad():
        out = align(torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 5))
    assert out.shape == (2, 3, 5) and torch.isfinite(out).all()
    assert align.pop_auxiliary_loss() is None  # nothing is distilled outside training


def test_row_stochastic_of_an_all_padding_row_is_zero():
    weights = row_stochastic(torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.bool))
    assert float(weights.abs().sum()) == 0.0


@pytest.mark.parametrize(
    "settings,message",
    [
        (dict(epsilon=0.0), "epsilon must be positive"),
        (dict(iterations=0), "iterations must be at least 1"),
        (dict(tolerance=-1.0), "tolerance must be positive"),
        (dict(cost="l2"), "cost must be one of"),
        (dict(predict_with="both"), "predict_with must be one of"),
        (dict(predict_with="student"), "needs distillation_weight > 0"),
        (dict(distillation_weight=-0.1), "distillation_weight must be >= 0"),
        (dict(distillation_temperature=0.0), "distillation_temperature must be positive"),
        (dict(distillation_sample=-1), "distillation_sample must be >= 0"),
    ],
)
def test_bad_settings_are_clear_errors(settings, message):
    with pytest.raises(ValueError, match=message):
        OTSettings(**settings)
