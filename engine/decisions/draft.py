"""What one request decided, as the pipelines fill it in: a few references to arrays the
request computed anyway (no copies, no per-candidate Python objects on the request thread);
the decision log's writer thread turns it into a ``reachrank.v1.Decision`` later."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.auction import AuctionResult
from engine.decisions.config import ExplorationSettings
from engine.decisions.explore import Choice, auction_prices, choose, greedy_order

if TYPE_CHECKING:
    from engine.models.ctr import CTRModel


@dataclass(slots=True, eq=False)
class DecisionDraft:
    rpc: str
    exploration: ExplorationSettings | None
    rng: np.random.Generator
    # Whether the decision is sampled into the log (it may only explore).
    logged: bool
    # Candidates: ids (an id table indexed by ``rows``, or the ids themselves).
    ids: Sequence[str] = ()
    rows: np.ndarray | None = None
    scores: np.ndarray | None = None
    # Candidate indices in slot order, and each one's propensity.
    shown: np.ndarray | None = None
    propensity: np.ndarray | None = None
    bids: np.ndarray | None = None
    prices: np.ndarray | None = None
    treatments: Sequence[str] = ()
    # Plan: the propensity of the candidates not shown (the held-out controls).
    control_propensity: float = 0.0
    ctr: CTRModel | None = None
    cat: np.ndarray | None = None
    num: np.ndarray | None = None
    strategy: str = ""  # Recommend's (set by the pipeline)
    explored: bool = False
    method: str = "exact"

    @property
    def explores(self) -> bool:
        return self.exploration is not None and self.exploration.active

    @property
    def ready(self) -> bool:
        return self.scores is not None

    def saw(self, ctr: CTRModel, cat: np.ndarray, num: np.ndarray) -> None:
        """The CTR model and the inputs it scored the candidates with."""
        self.ctr, self.cat, self.num = ctr, cat, num

    def choose(
        self,
        scores: np.ndarray,
        k: int,
        value: np.ndarray | None = None,
        known: np.ndarray | None = None,
    ) -> np.ndarray:
        """Pick the slots (exploring as configured); returns candidate indices, slot order."""
        picked = choose(scores, k, self.exploration, self.rng, value, known, self.logged)
        self._take(picked)
        return picked.order

    def _take(self, picked: Choice) -> None:
        self.shown, self.propensity = picked.order, picked.propensity
        self.explored, self.method = picked.explored, picked.method

    def ranked(
        self, ids: Sequence[str], rows: np.ndarray | None, scores: np.ndarray, order: np.ndarray
    ) -> None:
        """The candidates and what was shown; a greedy pick (no ``choose``) has propensity 1."""
        self.ids, self.rows, self.scores = ids, rows, scores
        if self.shown is None:
            self.shown, self.propensity = order, np.ones(len(order))

    def auction(
        self,
        pctr: np.ndarray,
        bids: np.ndarray,
        ad_ids: Sequence[str],
        slots: int,
        reserve: float,
        known: np.ndarray | None,
    ) -> AuctionResult:
        """An auction whose slots are picked by :meth:`choose` over pctr x bid: the winners in
        slot order, then the other ads by expected value; GSP prices along the order shown."""
        winners = self.choose(pctr, slots, value=bids, known=known)
        rest = np.ones(len(pctr), dtype=bool)
        rest[winners] = False
        ev = pctr.astype(np.float64) * bids
        others = greedy_order(ev)
        order = np.concatenate([winners, others[rest[others]]])
        slot = np.zeros(len(order), dtype=np.int32)
        slot[: len(winners)] = np.arange(1, len(winners) + 1)
        price = np.zeros(len(order))
        price[: len(winners)] = auction_prices(pctr, bids, winners, reserve)
        return AuctionResult(order=order, expected_value=ev[order], slot=slot, price=price)

    def auctioned(
        self, ad_ids: Sequence[str], pctr: np.ndarray, bids: np.ndarray, result: AuctionResult
    ) -> None:
        winners = int((result.slot > 0).sum())
        self.bids = bids
        self.prices = np.zeros(len(ad_ids))
        self.prices[result.order[:winners]] = result.price[:winners]
        self.ranked(ad_ids, None, pctr, result.order[:winners])
