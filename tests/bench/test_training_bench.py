"""BENCHMARKS.md updates from a partial run keep the tables and bars that were not remeasured."""

from __future__ import annotations

from bench.training import merge_section

OLD = """## Training quality

Old intro.

### Retrieval: movielens-100k

| model | recall@20 |
|---|---|
| ease | 0.2 |

### CTR: simulator

old simulator table

### Quality bars

- movielens-100k recall@20: shipped 0.2: met
- simulator AUC >= 97% of the oracle's: 96.7%: MISSED
- simulator ECE < 0.01 after calibration: 0.0087: met
""".splitlines()

NEW = """## Training quality

New intro.

### CTR: simulator

new simulator table

### Quality bars

- simulator AUC >= 97% of the oracle's: 98.2%: met
- simulator ECE < 0.01 after calibration: 0.0064: met
""".splitlines()


def test_partial_results_replace_only_what_they_measured() -> None:
    merged = "\n".join(merge_section(OLD, NEW))
    assert "New intro." in merged and "Old intro." not in merged
    assert "| ease | 0.2 |" in merged  # retrieval was not rerun: kept
    assert "new simulator table" in merged and "old simulator table" not in merged
    bars = [line for line in merged.split("\n") if line.startswith("- ")]
    assert bars == [
        "- movielens-100k recall@20: shipped 0.2: met",
        "- simulator AUC >= 97% of the oracle's: 98.2%: met",
        "- simulator ECE < 0.01 after calibration: 0.0064: met",
    ]
    # Subsections keep their order.
    assert merged.index("### Retrieval") < merged.index("### CTR") < merged.index("### Quality")


def test_a_section_with_nothing_measured_is_kept() -> None:
    old = ["## Feature pipeline speed", "", "| pipeline | seconds |", "|---|---|", ""]
    assert merge_section(old, ["## Feature pipeline speed"]) == old[:-1]
