"""ReachRank offline pipeline: simulate or read event logs, build features, train, evaluate, export bundles."""
