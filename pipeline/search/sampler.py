"""A sampler whose randomness comes from the trial number, so that workers sharing one study explore
different points while a study stays reproducible from its seed.

One seeded sampler per worker would draw the same sequence in every worker (the measured failure: two
workers, two trials, the same width, sparsity, learning rate and epochs). The trial number is unique across
the workers of a shared storage and independent of which worker runs the trial, so each trial gets a sampler
of its own, seeded from (study seed, trial number). What the samplers learn (TPE's densities, NSGA-II's
population) comes from the trials in the storage, not from the sampler object, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial, TrialState

MakeSampler = Callable[[int], optuna.samplers.BaseSampler]


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed for trial `number` of a study seeded with `seed` (the same pair, the same seed)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Delegates each trial to `make(trial_seed(seed, trial.number))`, made when the trial first asks."""

    def __init__(self, make: MakeSampler, seed: int) -> None:
        self._make, self._seed = make, seed
        self._current: tuple[int, optuna.samplers.BaseSampler] | None = None

    def for_trial(self, number: int) -> optuna.samplers.BaseSampler:
        if self._current is None or self._current[0] != number:
            self._current = (number, self._make(trial_seed(self._seed, number)))
        return self._current[1]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.for_trial(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.for_trial(trial.number).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.for_trial(trial.number).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.for_trial(trial.number).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.for_trial(trial.number).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to reseed: every trial's seed is derived from its number."""
