"""Generated code for the open inference protocols ReachRank serves beside its own (see v2)."""
