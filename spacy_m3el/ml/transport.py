"""Optimal-transport correlation assignment (OT-MEL) and its distillation into attention.

:func:`log_sinkhorn` solves a batch of entropic OT problems in the log domain;
:class:`OTAlignment` uses the plan in place of attention weights, with the
signature of :class:`~spacy_m3el.ml.layers.AttentionAlignment`, and can train a
:class:`StudentAttention` that imitates the plan so prediction needs no Sinkhorn.
"""

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .layers import grouped_matmul

# Log-mass of what may carry none (padding). Finite, so no -inf - -inf = NaN arises.
LOG_ZERO = -1e4
PREDICT_WITH = ("teacher", "student")
COSTS = ("cosine", "dot")


def _mask_or_ones(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """A boolean mask of x's leading dims (True = real position); all real when None."""
    if mask is None:
        return torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
    return mask.expand(x.shape[:-1])


def _log_uniform(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Log of the uniform marginal over the True positions of mask [..., n]; LOG_ZERO elsewhere."""
    count = mask.sum(dim=-1, keepdim=True).clamp(min=1).to(dtype)
    return torch.where(mask, -torch.log(count), torch.full_like(count, LOG_ZERO))


def log_sinkhorn(
    log_kernel: torch.Tensor,
    row_mask: torch.Tensor,
    col_mask: torch.Tensor,
    iterations: int = 3,
    tolerance: Optional[float] = None,
) -> torch.Tensor:
    """Log of the entropic OT plan between uniform marginals over the real rows and columns.

    The problem is ``min <C, P> - eps H(P)`` with ``P 1 = mu`` and ``P^T 1 = nu``;
    log_kernel is ``-C / eps``. Each iteration scales the rows, then the columns,
    with logsumexp updates, so it stays finite in float32 for small eps. After
    the last iteration the columns (keys) carry exactly their mass.

    log_kernel (Tensor[..., n, m]): ``-cost / epsilon``.
    row_mask (BoolTensor[..., n]), col_mask (BoolTensor[..., m]): real positions;
        padding gets no mass.
    iterations (int): Maximum number of row+column scalings.
    tolerance (Optional[float]): Stop early once every row marginal is within
        this (absolute) distance of its target.
    RETURNS (Tensor[..., n, m]): log P; pairs with padding hold about LOG_ZERO.
    """
    pair = row_mask.unsqueeze(-1) & col_mask.unsqueeze(-2)
    # Half precision is promoted: the potentials need float32's range.
    log_k = log_kernel.to(torch.promote_types(log_kernel.dtype, torch.float32))
    log_k = log_k.masked_fill(~pair, LOG_ZERO)
    log_mu, log_nu = _log_uniform(row_mask, log_k.dtype), _log_uniform(col_mask, log_k.dtype)
    u = torch.zeros_like(log_mu).expand(log_k.shape[:-1])
    v = torch.zeros_like(log_nu).expand(log_k.shape[:-2] + log_k.shape[-1:])
    for _ in range(iterations):
        u = log_mu - torch.logsumexp(log_k + v.unsqueeze(-2), dim=-1)
        v = log_nu - torch.logsumexp(log_k + u.unsqueeze(-1), dim=-2)
        if tolerance is not None:
            rows = torch.logsumexp(log_k + u.unsqueeze(-1) + v.unsqueeze(-2), dim=-1).exp()
            if bool(((rows - log_mu.exp()).abs() * row_mask).max() <= tolerance):
                break
    return log_k + u.unsqueeze(-1) + v.unsqueeze(-2)


def row_stochastic(log_plan: torch.Tensor, col_mask: torch.Tensor) -> torch.Tensor:
    """Rows of the plan rescaled to sum to 1 over real columns (all-padding rows give 0)."""
    weights = torch.softmax(log_plan, dim=-1)
    return weights * col_mask.unsqueeze(-2).to(weights.dtype)


@dataclass(frozen=True)
class OTSettings:
    """How :class:`OTAlignment` solves and uses the transport problem.

    epsilon (float): Entropic regularisation (the reference uses 0.05).
    iterations (int): Sinkhorn iterations (the reference uses 3).
    tolerance (Optional[float]): Early stop on the row marginals' error.
    cost (str): "cosine": ``(1 - cos) / 2`` as in the reference; "dot": the
        negative scaled dot product.
    detach_plan (bool): Stop gradients through the plan (the reference does so in
        its mention-entity matching, not in its fusion).
    distillation_weight (float): Weight of the KL loss that trains the student
        attention on the plan; 0 trains no student.
    distillation_temperature (float): Temperature of both distributions in that loss.
    distillation_sample (int): Query-key set pairs per call the loss is computed
        on, drawn at random (torch's seeded generator); 0 uses all of them. The
        mention-entity slots hold one pair per (mention, entity) of the batch.
    predict_with (str): What aligns outside training: "teacher" (Sinkhorn) or
        "student" (one softmax, no Sinkhorn; needs a trained student).
    """

    epsilon: float = 0.05
    iterations: int = 3
    tolerance: Optional[float] = None
    cost: str = "cosine"
    detach_plan: bool = False
    distillation_weight: float = 0.0
    distillation_temperature: float = 1.0
    distillation_sample: int = 512
    predict_with: str = "teacher"

    def __post_init__(self) -> None:
        checks = (
            (self.epsilon > 0, f"epsilon must be positive, got {self.epsilon}"),
            (self.iterations >= 1, f"iterations must be at least 1, got {self.iterations}"),
            (
                self.tolerance is None or self.tolerance > 0,
                f"tolerance must be positive or null, got {self.tolerance}",
            ),
            (self.cost in COSTS, f"cost must be one of {COSTS}, got {self.cost!r}"),
            (
                self.distillation_weight >= 0,
                f"distillation_weight must be >= 0, got {self.distillation_weight}",
            ),
            (
                self.distillation_temperature > 0,
                f"distillation_temperature must be positive, got {self.distillation_temperature}",
            ),
            (
                self.distillation_sample >= 0,
                f"distillation_sample must be >= 0, got {self.distillation_sample}",
            ),
            (
                self.predict_with in PREDICT_WITH,
                f"predict_with must be one of {PREDICT_WITH}, got {self.predict_with!r}",
            ),
            (
                self.predict_with == "teacher" or self.distillation_weight > 0,
                "predict_with = 'student' needs distillation_weight > 0 (an untrained "
                "student would align at random)",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(f"spacy_m3el.OTAlignment: {message}.")


class StudentAttention(nn.Module):
    """Attention shaped like a row-normalised OT plan: ``softmax_j(s_ij / tau + b(k_j))``.

    The row-normalised entropic plan is ``softmax_j(s_ij / eps + v_j)`` with a
    column potential v_j, so the student learns a temperature and predicts the
    potential from the key (and, for the column loss only, the row potential
    from the query). It reads detached features: distillation never changes
    what the teacher sees.
    """

    def __init__(self, width: int, epsilon: float):
        super().__init__()
        # Shape [1], not a scalar: Thinc's optimizers need sized parameters.
        self.log_tau = nn.Parameter(torch.full((1,), math.log(epsilon)))
        # No output bias: a constant shift cancels in the softmax.
        self.key_bias = nn.Sequential(
            nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1, bias=False)
        )
        self.query_bias = nn.Sequential(
            nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1, bias=False)
        )

    def forward(
        self, similarity: torch.Tensor, query: torch.Tensor, key: torch.Tensor, columns: bool = True
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Row logits (used to align) and column logits (used only in the loss; None
        unless ``columns``)."""
        base = similarity / self.log_tau.exp()
        rows = base + self.key_bias(key).squeeze(-1).unsqueeze(-2)
        if not columns:
            return rows, None
        return rows, base + self.query_bias(query).squeeze(-1).unsqueeze(-1)


def _masked_kl(
    target_logits: torch.Tensor,
    student_logits: torch.Tensor,
    mask: torch.Tensor,
    dim: int,
    temperature: float,
) -> torch.Tensor:
    """Mean KL(target || student) of the softmax over dim, over the lines that have real mass."""
    target = torch.log_softmax(target_logits.masked_fill(~mask, LOG_ZERO) / temperature, dim=dim)
    student = torch.log_softmax(student_logits.masked_fill(~mask, LOG_ZERO) / temperature, dim=dim)
    per_line = (target.exp() * (target - student) * mask).sum(dim=dim)
    lines = mask.any(dim=dim)
    return (per_line * lines).sum() / lines.sum().clamp(min=1) * temperature**2


class OTAlignment(nn.Module):
    """Queries gather values with weights from an entropic OT plan between queries and keys.

    Same call as ``AttentionAlignment`` (any leading dims, broadcast between
    queries and keys), plus the query mask: uniform marginals over the real
    queries and keys. The plan is rescaled to row-stochastic, so it replaces
    attention weights. In training, with a distillation weight, a
    :class:`StudentAttention` is fitted to the detached plan and its KL loss is
    kept until :meth:`pop_auxiliary_loss`.
    """

    def __init__(self, width: int, settings: OTSettings):
        super().__init__()
        self.settings = settings
        self.width = width
        self.student = (
            StudentAttention(width, settings.epsilon) if settings.distillation_weight > 0 else None
        )
        self._pending: List[torch.Tensor] = []

    def cache_key(self) -> str:
        """What, besides the weights, the aligned features depend on (entity cache validity)."""
        return f"OTAlignment:{self.settings}"

    def similarity(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        if self.settings.cost == "cosine":
            # (cos + 1) / 2: the negative of the reference's cost (1 - cos) / 2, in [0, 1].
            cos = grouped_matmul(
                F.normalize(query, dim=-1), F.normalize(key, dim=-1).transpose(-1, -2)
            )
            return (cos + 1) / 2
        return grouped_matmul(query, key.transpose(-1, -2)) * self.width**-0.5

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_mask: Optional[torch.Tensor] = None,
        query_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        similarity = self.similarity(query, key)
        rows_real = _mask_or_ones(query, query_mask).expand(similarity.shape[:-1])
        cols_real = _mask_or_ones(key, key_mask).expand(
            similarity.shape[:-2] + similarity.shape[-1:]
        )
        if not self.training and self.settings.predict_with == "student":
            weights = self._student_weights(similarity, query, key, cols_real)
        else:
            weights = self._teacher_weights(similarity, query, key, rows_real, cols_real)
        return grouped_matmul(weights.to(value.dtype), value)

    def _teacher_weights(self, similarity, query, key, rows_real, cols_real) -> torch.Tensor:
        settings = self.settings
        log_plan = log_sinkhorn(
            similarity / settings.epsilon,
            rows_real,
            cols_real,
            settings.iterations,
            settings.tolerance,
        )
        if self.training and self.student is not None:
            self._distil(log_plan.detach(), similarity.detach(), query, key, rows_real, cols_real)
        if settings.detach_plan:
            log_plan = log_plan.detach()
        return row_stochastic(log_plan, cols_real)

    def _student_weights(self, similarity, query, key, cols_real) -> torch.Tensor:
        if self.student is None:  # pragma: no cover - prevented by OTSettings
            raise RuntimeError("predict_with = 'student' needs a trained student.")
        rows, _ = self.student(similarity, query, key, columns=False)
        return row_stochastic(rows.masked_fill(~cols_real.unsqueeze(-2), LOG_ZERO), cols_real)

    def _distil(self, log_plan, similarity, query, key, rows_real, cols_real) -> None:
        lead = similarity.shape[:-2]
        parts = [log_plan, similarity, query.detach(), key.detach(), rows_real, cols_real]
        total, sample = math.prod(lead), self.settings.distillation_sample
        if 0 < sample < total:
            # Index each tensor on its own (possibly broadcast) leading dims: expanding the
            # keys to every (mention, entity) pair first would copy them per pair.
            chosen = torch.randperm(total, device=log_plan.device)[:sample]
            index = torch.unravel_index(chosen, lead)
            parts = [_take(part, index) for part in parts]
        else:
            parts = [_flat(part, lead) for part in parts]
        log_plan, similarity, query, key, rows_real, cols_real = parts
        rows, cols = self.student(similarity, query, key)
        pair = rows_real.unsqueeze(-1) & cols_real.unsqueeze(-2)
        temperature = self.settings.distillation_temperature
        loss = _masked_kl(log_plan, rows, pair, -1, temperature) + _masked_kl(
            log_plan, cols, pair, -2, temperature
        )
        self._pending.append(self.settings.distillation_weight * loss)

    def pop_auxiliary_loss(self) -> Optional[torch.Tensor]:
        """The distillation loss of the forward passes since the last call, or None."""
        if not self._pending:
            return None
        total = torch.stack(self._pending).sum()
        self._pending = []
        return total


def _take(x: torch.Tensor, index: Tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The items ``index`` (one tensor per leading dim) of x, whose size-1 leading dims
    broadcast; x may have fewer dims before its last two (rows, features) or one (masks)."""
    offset = len(index)
    tail = x.dim() - offset
    if tail < 1:
        raise ValueError(f"cannot index {tuple(x.shape)} on {offset} leading dims")
    picks = tuple(i if x.shape[d] > 1 else torch.zeros_like(i) for d, i in enumerate(index))
    return x[picks]


def _flat(x: torch.Tensor, lead: torch.Size) -> torch.Tensor:
    rest = x.shape[len(lead) :]
    return x.expand(lead + rest).reshape((-1,) + rest)


def ot_alignment(settings: OTSettings) -> Callable[[int], nn.Module]:
    """An alignment factory: width -> :class:`OTAlignment` of that width."""

    def make(width: int) -> nn.Module:
        return OTAlignment(width, settings)

    return make


def auxiliary_losses(module: nn.Module) -> Tuple[Optional[torch.Tensor], int]:
    """Sum and count of the pending auxiliary losses of module's submodules (then cleared)."""
    found = [
        loss
        for child in module.modules()
        if child is not module and hasattr(child, "pop_auxiliary_loss")
        for loss in [child.pop_auxiliary_loss()]
        if loss is not None
    ]
    return (torch.stack(found).sum() if found else None), len(found)
