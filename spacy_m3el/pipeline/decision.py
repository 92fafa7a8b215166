"""The linking decision: the model's score combined with the alias table's evidence.

Stage 1 proposes two kinds of candidates: entities that the KB lists under
the mention's name (with a prior probability) and entities that are only
near the mention in the model's embedding space. The model's score alone
treats them alike, so in a large KB an entity with the gold's picture and
another name can win. The decision adds the alias table's evidence, a
conditional logit over each mention's candidates::

    combined = score_weight * score
               + alias_weight * is_alias
               + prior_weight * is_alias * log(max(prior, MIN_PRIOR))
               + fuzzy_weight * is_fuzzy

where ``is_fuzzy`` marks alias candidates found under an alias within one
edit of the mention's name rather than under the name itself.

Fitted per unit (``fit_decision(units=...)``, the linker's default), the
model's overall score (the mean of its matching units) is replaced by a
weighted sum of the units' scores, ``sum_u unit_weight_u * unit_score_u``,
with ``score_weight`` 0. In a KB crowded with same-name entities the units do
not deserve equal say (measured in ``bench.accuracy``: the image unit gains
weight against the cross-modal ones); with equal unit weights the two forms
rank alike, and the fit starts there.

:func:`fit_decision` fits the weights by maximum likelihood of the gold
candidate on held-out (dev) mentions, so the probabilities reported for the
candidates are also calibrated. With the default weights (1, 0, 0, 0) the
decision is the papers' pure ranking by the model's score; a dense candidate
still wins when the alias table has no entry for the name (a misspelt or
unseen mention), because then no candidate gets the alias terms.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy

MIN_PRIOR = 1e-4
PURE = numpy.array([1.0, 0.0, 0.0, 0.0])  # the papers' ranking: the model's score alone
SCALARS = ("score_weight", "alias_weight", "prior_weight", "fuzzy_weight")


@dataclass(frozen=True)
class LinkDecision:
    """Weights of the combined candidate score (see the module docstring)."""

    score_weight: float = 1.0
    alias_weight: float = 0.0
    prior_weight: float = 0.0
    fuzzy_weight: float = 0.0
    fitted_on: int = 0  # mentions the weights were fitted on (0: not fitted)
    # (unit, weight) per matching unit of the model; empty: the model's overall score.
    unit_weights: Tuple[Tuple[str, float], ...] = ()

    def combine(
        self,
        scores: numpy.ndarray,
        alias_priors: Sequence[float],
        fuzzy: Optional[Sequence[bool]] = None,
        unit_scores: Optional[numpy.ndarray] = None,
    ) -> numpy.ndarray:
        """Combined scores of one mention's candidates.

        scores (numpy.ndarray[C]): The model's scores.
        alias_priors (Sequence[float]): Each candidate's alias prior; NaN for a
            candidate that is not in the alias table under the mention's name.
        fuzzy (Optional[Sequence[bool]]): Which alias candidates matched within one edit.
        unit_scores (Optional[numpy.ndarray[C, units]]): The units' scores
            (``M3ELModel.unit_scores``), needed when the decision has unit weights.
        RETURNS (numpy.ndarray[C]): float64 combined scores.
        """
        unit_term = None
        if self.unit_weights:
            if unit_scores is None or unit_scores.shape[-1] != len(self.unit_weights):
                raise ValueError(
                    f"This linking decision weighs the units {self.units} and needs their "
                    "scores; refit it (fit-decision) if the model's units changed."
                )
            unit_term = unit_scores.astype("float64") @ self.unit_vector
        return self.combine_terms(scores, alias_priors, fuzzy, unit_term)

    def combine_terms(
        self,
        scores: numpy.ndarray,
        alias_priors: Sequence[float],
        fuzzy: Optional[Sequence[bool]],
        unit_term: Optional[numpy.ndarray],
    ) -> numpy.ndarray:
        """:meth:`combine` with the units' part already summed (``unit_scores @
        unit_vector``, [C]; None without unit weights), as a chunked scorer keeps it."""
        combined = candidate_features(scores, alias_priors, fuzzy) @ self.weights
        if self.unit_weights:
            if unit_term is None:
                raise ValueError(f"This linking decision needs the scores of {self.units}.")
            combined = combined + unit_term
        return combined

    def check_units(self, units: Sequence[str]) -> None:
        """RAISES (ValueError): The decision weighs other units than the model's ``units``."""
        if self.unit_weights and self.units != list(units):
            raise ValueError(
                f"The linking decision was fitted for the units {self.units}, the model has "
                f"{list(units)}: refit it (python -m spacy_m3el fit-decision)."
            )

    @property
    def units(self) -> List[str]:
        """The units the decision weighs (empty: it uses the overall score)."""
        return [unit for unit, _ in self.unit_weights]

    @property
    def unit_vector(self) -> numpy.ndarray:
        return numpy.array([weight for _, weight in self.unit_weights], dtype="float64")

    @property
    def weights(self) -> numpy.ndarray:
        return numpy.array(
            [self.score_weight, self.alias_weight, self.prior_weight, self.fuzzy_weight]
        )

    @property
    def is_pure_ranking(self) -> bool:
        return not self.unit_weights and bool((self.weights == PURE).all())

    def to_dict(self) -> Dict[str, Any]:
        """The settings for the component's ``cfg``: weights as exact decimal strings
        (srsly's JSON reader does not read every float back bit for bit)."""
        data: Dict[str, Any] = {key: repr(float(getattr(self, key))) for key in SCALARS}
        data["fitted_on"] = self.fitted_on
        data["unit_weights"] = [[unit, repr(float(w))] for unit, w in self.unit_weights]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LinkDecision":
        """Read :meth:`to_dict`'s settings (those of a release without unit weights too)."""
        try:
            weights = {key: float(data[key]) for key in SCALARS}
            units = tuple((str(u), float(w)) for u, w in data.get("unit_weights", []))
            return cls(**weights, fitted_on=int(data["fitted_on"]), unit_weights=units)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"Malformed linking decision settings {dict(data)!r}: {err}") from err


def candidate_features(
    scores: numpy.ndarray, alias_priors: Sequence[float], fuzzy: Optional[Sequence[bool]] = None
) -> numpy.ndarray:
    """[C, 4] features: model score, alias indicator, alias log-prior, fuzzy-match indicator."""
    priors = numpy.asarray(alias_priors, dtype="float64")
    is_alias = ~numpy.isnan(priors)
    clipped = numpy.maximum(numpy.nan_to_num(priors), MIN_PRIOR)
    log_prior = numpy.where(is_alias, numpy.log(clipped), 0.0)
    model_scores = numpy.asarray(scores, dtype="float64")
    is_fuzzy = numpy.zeros(len(priors)) if fuzzy is None else numpy.asarray(fuzzy, dtype="float64")
    columns = [model_scores, is_alias.astype("float64"), log_prior, is_fuzzy * is_alias]
    return numpy.stack(columns, axis=1)


def fit_decision(
    groups: Sequence[Tuple[Any, ...]],
    *,
    units: Sequence[str] = (),
    l2: float = 1e-2,
    iterations: int = 100,
) -> LinkDecision:
    """Fit the weights by maximum likelihood of the gold candidate (a conditional logit).

    groups (Sequence[Tuple]): Per dev mention whose gold is among its candidates: the
        candidates' model scores, their alias priors (NaN if not an alias candidate),
        fuzzy-match flags, the gold's position and, to fit per unit, the candidates'
        unit scores ``[C, units]``.
    units (Sequence[str]): The model's units, in the order of the unit scores: fit a
        weight per unit in place of the score weight. Empty: one score weight.
    l2 (float): Ridge penalty per mention on the distance of the weights from the
        pure ranking (the score, or equal unit weights): keeps them finite when the dev
        data are perfectly separated.
    RETURNS (LinkDecision): The fitted weights.
    """
    usable = [
        (_fit_features(group, bool(units)), group[3]) for group in groups if len(group[0]) > 1
    ]
    if not usable:
        raise ValueError(
            "Cannot fit the linking decision: no dev mention has its gold entity and at "
            "least one other entity among its candidates."
        )
    start = PURE.copy() if not units else numpy.r_[numpy.full(len(units), 1 / len(units)), PURE[1:]]
    weights = _newton(usable, start, l2 * len(usable), iterations)
    fitted = [round(float(w), 6) for w in weights]
    if not units:
        return LinkDecision(*fitted, fitted_on=len(usable))
    k = len(units)
    return LinkDecision(
        0.0, *fitted[k:], fitted_on=len(usable), unit_weights=tuple(zip(units, fitted[:k]))
    )


def _fit_features(group: Tuple[Any, ...], per_unit: bool) -> numpy.ndarray:
    """A group's feature matrix: [score or unit scores, alias, log prior, fuzzy]."""
    features = candidate_features(group[0], group[1], group[2])
    if not per_unit:
        return features
    return numpy.concatenate([numpy.asarray(group[4], dtype="float64"), features[:, 1:]], axis=1)


def _newton(
    usable: List[Tuple[numpy.ndarray, int]], start: numpy.ndarray, penalty: float, iterations: int
) -> numpy.ndarray:
    """Minimize the ridge-penalized conditional-logit loss (convex) by damped Newton."""

    def objective(weights: numpy.ndarray) -> float:
        loss = 0.5 * penalty * float((weights - start) @ (weights - start))
        for features, gold in usable:
            logits = features @ weights
            top = logits.max()
            loss += top + numpy.log(numpy.exp(logits - top).sum()) - logits[gold]
        return loss

    weights, current = start.copy(), objective(start)
    for _ in range(iterations):
        gradient, hessian = penalty * (weights - start), numpy.eye(len(start)) * penalty
        for features, gold in usable:
            logits = features @ weights
            p = numpy.exp(logits - logits.max())
            p /= p.sum()
            mean = p @ features
            gradient -= features[gold] - mean
            centered = features - mean
            hessian += (centered * p[:, None]).T @ centered
        step, size = numpy.linalg.solve(hessian, gradient), 1.0
        while size > 1e-6:  # backtrack until the objective decreases
            candidate = weights - size * step
            value = objective(candidate)
            if value <= current:
                break
            size /= 2
        else:
            break
        converged = current - value < 1e-10 * max(1.0, abs(current))
        weights, current = candidate, value
        if converged:
            break
    return weights
