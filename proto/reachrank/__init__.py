"""Generated ReachRank wire contract (package reachrank.v1); regenerate with `make proto`."""
