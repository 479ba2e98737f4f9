"""Budget pacing by probabilistic throttling: each campaign takes part in a request's auction
with probability ``throttle``, decided once per pacing interval from the shared spend.

At the start of interval k (traffic share F(k) of the day gone by the campaign's curve, spend
S so far):
- the unthrottled spend rate (spend per unit of traffic share had every request entered) is
  re-estimated from the last interval, ``spent / (throttle x its traffic share)``, smoothed;
- the interval's target is what brings spend back onto the target curve by its end,
  ``max(0, budget x F(k+1) - S)`` (a deadbeat step towards budget x F(t));
- throttle = target / (rate x the interval's traffic share), within [min_throttle, 1].
Spend then follows the curve whatever the campaign's competitiveness, and a campaign ahead of
its curve backs off at once. Without a rate estimate yet (the day's first interval), it serves
unthrottled.
"""

from __future__ import annotations

from engine.state.ad_spend import Pace


def next_pace(
    prev: Pace,
    interval: int,
    spend: float,
    budget: float,
    share_prev: float,
    share_now: float,
    share_next: float,
    min_throttle: float = 0.01,
    smoothing: float = 0.5,
) -> Pace:
    """The pace for ``interval`` (its share of traffic runs from ``share_now`` to
    ``share_next``; the previous interval's from ``share_prev``), given ``prev`` (the last
    interval decided) and the campaign's spend so far."""
    rate = prev.rate
    if prev.interval == interval - 1 and prev.throttle > 0 and share_now > share_prev:
        observed = (spend - prev.spend_at_start) / (prev.throttle * (share_now - share_prev))
        rate = observed if rate <= 0 else smoothing * observed + (1 - smoothing) * rate
    ahead = share_next - share_now
    if rate <= 0 or ahead <= 0:
        throttle = 1.0
    else:
        target = max(0.0, budget * share_next - spend)
        throttle = min(1.0, max(min_throttle, target / (rate * ahead)))
    return Pace(interval, throttle, spend, rate)
