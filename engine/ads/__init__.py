"""Ad campaigns on the RankAds path (issue 18): campaigns with daily budgets and flights
(:mod:`engine.ads.campaigns`), spend-rate pacing (:mod:`engine.ads.pacing`), frequency caps,
and the gate RankAds asks which candidates may enter the auction and tells what it served
(:mod:`engine.ads.gate`). Shared state lives in :mod:`engine.state.ad_spend` and
:mod:`engine.state.freq_caps`."""
