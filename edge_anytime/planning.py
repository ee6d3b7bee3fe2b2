"""Planning at a frame's start: which a-priori slice, if any, runs instead of the anytime plan.

`SlicePlanning` is the part of `DeadlinePolicy` (policy.py) that decides per
frame, when its deadline is known: `plan_frame` (anytime mode: the anytime
plan's expected value against each exit's a-priori slice, the precision
fallback's slices among them; near ties to the fastest slice, `pick`; a
narrowly losing fallback slice explored now and then; a frame left without any
chance of a result exploring the first exit's fallback slice), `choose_apriori`
(a-priori mode), the floors below which nothing is weighed (`tick_floors`,
`first_exit_only`) and the time a slice saves over the anytime prefix
(`slice_savings`). It reads the estimators, values and options that
`DeadlinePolicy.__init__` sets; docs/runtime.md "Planning at the frame's start".
"""

from __future__ import annotations

import math

PLAN_FLOOR_EVERY = 32       # frames between recomputations of the time left below which no slice can fit ...
PLAN_FLOOR_SLACK = 0.1      # ... which is kept 10% low: samples move it between recomputations
FIRST_ONLY_QUANTILE = 0.01  # the first segment's fast tail, when judging whether a refinement could follow it
EXPLORE_NEAR = 0.9          # a fallback slice that lost with p * value >= this share of the winner's is explored
STARVED_REACH = 0.5         # _explore_starved(): a starved frame explores only with this share of its slice's time
STARVED_GAP = 8             # ... and at most one starved frame in this many does (its own wait aside): no storms
TIE_ROOM = 1.5              # pick(): the best slice runs, near ties or not, with this many times its typical time left


class SlicePlanning:
    """`DeadlinePolicy`'s per-frame planning (see the module docstring)."""

    def choose_apriori(self, now: float, limit: float) -> int | str | None:
        """The exit with the highest chance-weighted accuracy p * value whose slice has p >= min_fit_probability
        (with a fallback precision, its slices too, each worth its `fallback_values` entry); None if none. The
        user asked for the best slice that fits: no near-tie rule here (`pick`, anytime planning)."""
        chosen, chosen_score = None, 0.0
        remaining = limit - now
        for index, value in self.slice_values.items():
            p = self.slice_estimators[index].fit_probability(remaining, guarded=False)   # no result in hand
            if p >= self.options.min_fit_probability and p > 0 and p * value > chosen_score:
                chosen, chosen_score = index, p * value
        if chosen is None:
            for index in self.apriori_order:
                if self.slice_estimators[index].refused() and chosen is None:
                    chosen = index              # explored: see admits()
                    self.counts["explorations"] += 1
        return chosen

    def plan_frame(self, now: float, limit: float) -> int | str | None:
        """Planning at a frame's start, when the deadline is known: the exit whose a-priori slice to run
        instead of the anytime plan, or None to run the anytime plan.

        The anytime plan's expected value is sum_k value_k * P(exit k is the last reached) from each exit's
        measured reach latency (its admission adapts within the frame, and an earlier exit stays a fallback,
        so a slice must really be worth more to replace it); an exit counts only for the frames whose segment
        admission would let it start: those whose exit before arrives early enough, at most the time left less
        the segment's latency at the probability admission needs (inline, a refinement must not put the result
        in hand at risk, so at a budget where the anytime plan would often stop at exit k, a slice of a deeper
        exit that fits nearly surely is worth more). The a-priori slice of exit k is worth
        P(slice k fits) * value_k (its own samples once it has run, else the exit's reach minus what the slice
        skips: the heads of earlier exits and their hand-overs, whose results would be superseded). With a
        fallback precision each of its slices (`fallback_key(k)`) is a candidate too, worth P(it fits, from its
        own samples) times exit k's value less its measured disagreement with the primary graphs. The slice is
        chosen only when it is worth more. When the primary first exit is unlikely to make it (p below
        `min_fit_probability`), a fallback slice worth more than it is chosen without weighing the rest. A
        fallback slice that lost narrowly is run now and then instead (`_explore_fallbacks`).
        """
        remaining = limit - now
        if remaining < self._plan_floor:
            return self._explore_starved(remaining)   # no slice fits (a frame at a tight budget pays little)
        last = self.reach_estimators[-1].fit_probability(remaining)
        if last >= 1.0:
            return None        # the whole anytime plan surely fits: no slice is worth more
        min_p = self.options.min_fit_probability
        fallbacks = self._fallback_scores(remaining) if self._fallback_candidates else []
        if self._fallback_candidates:   # too tight for the primary first exit: a fallback slice, decided fast
            first = self.reach_estimators[0].fit_probability(remaining, guarded=False)   # no burst release here
            if first < min_p:
                if not fallbacks:
                    return self._explore_starved(remaining, first)
                score, _, key, _, _ = self.pick(fallbacks, -math.inf, remaining)
                if score > first * self._segment_values[0]:
                    return self._explore_fallbacks(fallbacks, key, score)
        saved = self.slice_savings()
        min_online = self.options.estimator.min_online
        candidates = []        # slices that could run: (p * value, p, exit, estimator, offset: see pick)
        for position, index, value in self._plan_candidates:
            if saved[position] <= 0:
                continue       # the slice is the anytime prefix itself: nothing to win
            measured = self.slice_estimators[index]
            if measured.online_count >= min_online:   # this slice has run: its own samples
                p = measured.fit_probability(remaining)
                if p >= min_p:
                    candidates.append((p * value, p, index, measured, 0.0))
            else:                       # else the exit's reach without the steps the slice skips
                reach = self.reach_estimators[position]
                p = reach.fit_probability(remaining + saved[position])
                if p >= min_p:
                    candidates.append((p * value, p, index, reach, saved[position]))
        candidates += fallbacks
        if not candidates:
            return None        # no slice can run (the usual case at tight budgets: one cheap check per slice)
        reach = [est.fit_probability(remaining) for est in self._early_reach] + [last]
        for position in range(1, len(reach)):   # a later exit counts for the frames whose segment is admitted:
            need = self.required_probability(position, self._best_before[position])   # those whose exit before
            admitted = 0.0 if need > 1.0 else self.reach_estimators[position - 1].fit_probability(   # comes early
                remaining - self.segment_estimators[position].lower_bound(need), guarded=False)
            reach[position:] = [min(p, admitted) for p in reach[position:]]
        anytime, best = 0.0, 0.0
        for value, p, p_next in zip(self._segment_values, reach, reach[1:] + [0.0]):
            if value > best:   # the last exit reached in time is kept (admission stops before overruns)
                best = value
            anytime += best * (p - p_next)
        chosen = self.pick(candidates, anytime, remaining)
        if chosen is None:
            return None
        return chosen[2] if not fallbacks else self._explore_fallbacks(fallbacks, chosen[2], chosen[0])

    def pick(self, scored: list[tuple], floor: float, remaining: float) -> tuple | None:
        """The slice to run among `scored` candidates (p * value, p, key, estimator, offset: its typical latency is
        `estimator.typical() - offset`, read only when needed) when the best is worth more than `floor` (the
        anytime plan's value, when it is the alternative), with `remaining` seconds left: its entry, or None if
        none is worth more. The best runs when it has room to spare (`remaining` at least TIE_ROOM times its
        typical latency). Otherwise those within `options.value_tie` of the best p * value are equally good
        (exit values are validation accuracies, and a difference below the validation set's resolution does
        not pay for a slower slice that barely fits): the fastest (lowest typical latency) wins, then the
        highest p, then the highest p * value, then the first listed. Speed first: a typical latency is
        measured robustly, while a seldom-run slice's p can rest on older, cleaner samples than a busy one's.
        `value_tie=0`: strict p * value order."""
        best = None
        for item in scored:
            if item[0] > floor and (best is None or item[0] > best[0]):
                best = item
        if best is None or len(scored) == 1:
            return best
        typical = best[3].typical() - best[4]
        if remaining >= TIE_ROOM * typical:
            return best
        tie, chosen, chosen_key = best[0] - self.options.value_tie, best, (-typical, best[1], best[0])
        for item in scored:
            if item[0] >= tie and item is not best:
                key = (item[4] - item[3].typical(), item[1], item[0])
                if key > chosen_key:
                    chosen, chosen_key = item, key
        return chosen

    def _explore_fallbacks(self, scores: list[tuple], chosen: int | str, score: float) -> int | str:
        """Slice `chosen` won with `score` (p * value); a fallback slice worth more (by value) that lost on its fit
        probability, narrowly (its p * value at least EXPLORE_NEAR of the winner's), counts a refusal, and after
        its exploration wait (TRUSTED_EXPLORE_AFTER refusals in a row at first, then halved or doubled by each
        outcome) runs out, runs once instead (latency.py, "Exploration"): a few slow samples, in its warm-up
        seeds or among its first served runs, must not keep a slice as good as the winner unused for good. (With
        the estimators' usual first wait of 8 refusals, explorations lost half the frames they tried in a
        cache-cold benchmark.)"""
        value, near, estimators = self.slice_values[chosen], EXPLORE_NEAR * score, self.slice_estimators
        for worth, _, key, _, _ in scores:
            if worth >= near and self.fallback_values[key] > value and estimators[key].refused():
                self.counts["explorations"] += 1
                return key
        return chosen

    def _explore_starved(self, remaining: float, first: float | None = None) -> str | None:
        """A frame for which nothing is planned and the primary first exit is unlikely (or no slice reaches
        `min_fit_probability`) would have no result. If the first exit's fallback slice could still end in
        time were its samples up to 2x too slow (`remaining` at least STARVED_REACH of its time at
        `min_fit_probability`), it counts a refusal, and when its exploration wait runs out it runs once anyway
        (latency.py, "Exploration": the wait halves after a run faster than its samples said, doubles
        otherwise), at most once in STARVED_GAP starved frames. A spell of overruns at a tight budget fills its
        window with slow runs, and a slice never run again is never measured again: without this, every frame
        at such a budget had no result for good (bench_budgets.py on this host, 22:19 UTC: 38-53% on time and
        correct on the cruise traces where the a-priori mode, which explores its refused slices, had 73%).
        `first`: the primary first exit's fit probability, when the caller has it. None: no exploration."""
        key = self._starved_key
        if key is None:
            return None
        min_p = self.options.min_fit_probability
        if first is None:
            first = self.reach_estimators[0].fit_probability(remaining, guarded=False)
        if first >= min_p:
            return None          # the primary first exit may make it: the anytime plan runs
        estimator = self.slice_estimators[key]
        if remaining < STARVED_REACH * estimator.lower_bound(min_p):
            return None
        self._starved_frames += 1
        if self._starved_frames < STARVED_GAP or not estimator.refused():
            return None
        self._starved_frames = 0
        self.counts["explorations"] += 1
        return key

    def drop_fallbacks(self) -> None:
        """A fallback slice raised (a graph the target's runtime cannot run, a broken delegate): no fallback
        slice is planned again; the primary graphs answer every frame, as with `fallback_precision=None`."""
        for key in self.fallback_values:
            self.slice_values.pop(key, None)
        self.fallback_values = {}
        self._fallback_candidates = []
        self._starved_key = None
        self._plan_floor_age = PLAN_FLOOR_EVERY     # the planning floor loses its fallback slices

    def _fallback_scores(self, remaining: float) -> list[tuple]:
        """(p * value, p, key, estimator, 0.0) of each fallback slice with p >= min_fit_probability (its own
        samples, seeds or not; no burst-guard release: no result is in hand at planning): `pick`'s candidates."""
        min_p, estimators = self.options.min_fit_probability, self.slice_estimators
        scores = []
        for key, value in self._fallback_candidates:
            estimator = estimators[key]
            p = estimator.fit_probability(remaining, guarded=False)
            if p >= min_p:
                scores.append((p * value, p, key, estimator, 0.0))
        return scores

    def tick_floors(self) -> None:
        """An anytime frame starts: every PLAN_FLOOR_EVERY frames, recompute the time left below which no
        slice can be planned (`plan_frame`) and no segment can follow the first exit (`first_exit_only`)."""
        self._plan_floor_age += 1
        if self._plan_floor_age >= PLAN_FLOOR_EVERY:
            self._plan_floor_age = 0
            self._plan_floor = self._slice_floor()
            self._refine_floor = self._refinement_floor()

    def first_exit_only(self, remaining: float) -> bool:
        """With `remaining` seconds to the frame's limit, can no segment after the first be admitted however
        early the first exit comes? Then the frame runs its first segment alone, delivered like an a-priori
        slice, without an admission check after its exit (at a budget just above the first exit's latency,
        that check and its bookkeeping were the difference between on time and late). The second segment's
        refusal is counted as admission would count it, and the frame that would explore it runs in full."""
        return remaining < self._refine_floor and self.segment_estimators[1].refuse_unchecked()

    def _refinement_floor(self) -> float:
        """The first segment's fast tail (FIRST_ONLY_QUANTILE) plus the least time at which the second reaches
        `min_fit_probability`, less PLAN_FLOOR_SLACK; 0 (never first-only) while either is unknown."""
        if len(self.segments) < 2:
            return 0.0
        first = self.segment_estimators[0].lower_bound(FIRST_ONLY_QUANTILE)
        second = self.segment_estimators[1].lower_bound(self.options.min_fit_probability)
        floor = (1.0 - PLAN_FLOOR_SLACK) * (first + second)
        return floor if math.isfinite(floor) else 0.0

    def _slice_floor(self) -> float:
        """The time left below which no a-priori slice reaches `min_fit_probability` (see plan_frame's
        candidates), less PLAN_FLOOR_SLACK for the samples that arrive before it is recomputed; 0 (no floor)
        while a candidate's latency is unknown."""
        saved, min_p = self.slice_savings(), self.options.min_fit_probability
        floors = []
        for position, index, _ in self._plan_candidates:
            if saved[position] > 0:
                measured = self.slice_estimators[index]
                floors.append(measured.lower_bound(min_p) if measured.online_count >= self.options.estimator.min_online
                              else self.reach_estimators[position].lower_bound(min_p) - saved[position])
        floors += [self.slice_estimators[key].lower_bound(min_p) for key in self.fallback_values]
        floor = (1.0 - PLAN_FLOOR_SLACK) * min(floors, default=math.inf)
        return floor if math.isfinite(floor) or not floors else 0.0

    def slice_savings(self) -> list[float]:
        """Per anytime segment position: the mean time its exit's a-priori slice saves over the anytime prefix:
        the steps it skips (heads of earlier exits) and, per earlier exit, the measured hand-over from one
        exit's publication to the next segment's start."""
        savings = self._savings          # read once: the sample recorder may reset it from its thread
        if savings is None:
            mean = self.step_mean
            savings = self._savings = [sum(mean[i] for i in skipped) + position * self.exit_gap
                                       for position, skipped in enumerate(self._skipped)]
        return savings
