"""The human half of the training report: ``report.md`` with metric tables and PNG plots
(a reliability diagram per CTR model, retrieval metrics per model) beside ``report.json``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt

from training.metrics import ReliabilityCurve

PLOTS = "plots"
CTR_COLUMNS = ("auc", "logloss", "ece")
RETRIEVAL_COLUMNS = ("recall@20", "ndcg@10", "hitrate@10", "coverage")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; floats with 4 decimals."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def reliability_plot(name: str, curve: ReliabilityCurve, path: Path) -> None:
    """Mean prediction vs observed rate per (equal-mass) bin, with the diagonal."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    top = max(float(curve.mean_predicted.max()), float(curve.fraction_positive.max()), 1e-3)
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="perfect")
    ax.plot(curve.mean_predicted, curve.fraction_positive, marker="o", label=name)
    ax.set_xlabel("mean predicted pCTR (equal-mass bins)")
    ax.set_ylabel("observed click rate")
    ax.set_title(f"Reliability: {name}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def retrieval_plot(
    models: Mapping[str, Mapping[str, Any]], path: Path, shipped: str | None = None
) -> None:
    """Grouped bars of Recall@20 and NDCG@10 per retrieval model and baseline, with the
    Recall@20 bootstrap interval (``recall@20_ci``) as an error bar where there is one."""
    names = list(models)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(names)), 3.5), dpi=100)
    width = 0.4
    for j, metric in enumerate(("recall@20", "ndcg@10")):
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        values = [float(models[n].get(metric, 0.0)) for n in names]
        errors = None
        if metric == "recall@20" and all(f"{metric}_ci" in models[n] for n in names):
            cis = [models[n][f"{metric}_ci"] for n in names]
            errors = [
                [v - lo for v, (lo, _) in zip(values, cis, strict=True)],
                [hi - v for v, (_, hi) in zip(values, cis, strict=True)],
            ]
        ax.bar(xs, values, width, label=metric, yerr=errors, capsize=3 if errors else 0)
    labels = [f"{n}\n(shipped)" if n == shipped else n for n in names]
    ax.set_xticks(range(len(names)), labels, rotation=20)
    ax.set_title("Retrieval on the test split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _with_interval(metrics: Mapping[str, Any] | None, key: str = "recall@20") -> str:
    if not metrics:
        return ""
    lo, hi = metrics.get(f"{key}_ci", (None, None))
    value = f"{metrics[key]:.4f}" if key in metrics else ""
    return f"{value} [{lo:.4f}, {hi:.4f}]" if lo is not None else value


def format_params(params: Mapping[str, Any]) -> str:
    """Tuned parameters, a blend's parts as ``part(…)``."""

    def one(k: str, v: Any) -> str:
        if isinstance(v, Mapping):
            return f"{k}({format_params(v)})" if v else k
        return f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"

    return ", ".join(one(k, v) for k, v in params.items())


def leaderboard_section(board: Sequence[Mapping[str, Any]], why: str) -> list[str]:
    """Every retrieval candidate and baseline: tuned parameters, valid and test metrics with
    95% bootstrap intervals over users, and which one shipped and why."""
    rows = []
    for row in board:
        label = row["name"] + (" (shipped as `retrieval`)" if row["shipped"] else "")
        if row["role"] == "baseline":
            label = f"baseline: {row['name']}"
        test = row.get("test") or {}
        rows.append(
            [
                label,
                format_params(row.get("params", {})),
                _with_interval(row.get("valid")),
                _with_interval(test),
                test.get("ndcg@10"),
                test.get("coverage"),
            ]
        )
    shipped = next((r["name"] for r in board if r["shipped"]), None)
    header = ("model", "tuned on valid", "valid recall@20 [95%]", "test recall@20 [95%]")
    return [
        "## Retrieval leaderboard",
        "",
        "Candidates are tuned and compared on valid (fitted on train), then refitted on train + "
        "valid and scored on test; baselines are scored the same way but never shipped. "
        "Intervals: 95% bootstrap over the evaluated users. Top-20 over items each user has not "
        "consumed; users with history before the part and new positives in it.",
        "",
        markdown_table((*header, "test ndcg@10", "test coverage"), rows),
        "",
        f"Shipped as `retrieval`: **{shipped}**, {why}." if shipped else "Nothing shipped.",
        "",
    ]


CVR_COLUMNS = ("pcvr_auc", "pcvr_ece", "pctcvr_auc", "pctcvr_ece")


def cvr_section(cvr: Mapping[str, Any]) -> list[str]:
    """The conversion model beside its baselines: pCVR on the clicked test rows, pCTCVR
    (served pCTR x pCVR) on every test row, and against the simulator's truth where known."""
    oracle = cvr["baselines"].get("oracle")
    truth = ("pcvr_ece_vs_oracle", "pcvr_bias_unclicked") if oracle else ()
    header = ["model", *CVR_COLUMNS, *truth] + (["pCVR AUC / oracle"] if oracle else [])
    rows = []
    named = {f"{cvr['model']} (shipped as `{cvr['output']}`)": cvr["models"][cvr["model"]]}
    named |= {f"baseline: {k}": v for k, v in cvr["baselines"].items()}
    for label, m in named.items():
        row: list[object] = [label, *(m.get(c) for c in (*CVR_COLUMNS, *truth))]
        if oracle:
            row.append(m["pcvr_auc"] / oracle["pcvr_auc"])
        rows.append(row)
    sizes = cvr.get("rows", {})
    return [
        "## Conversion (pCVR, test split)",
        "",
        markdown_table(header, rows),
        "",
        "ESMM: CTR and CVR towers over shared embeddings, fitted on every training impression "
        "(click and click-and-purchase labels); pCVR calibrated on the clicked valid rows and "
        f"served as the `{cvr['output']}` output of every CTR bundle. pCVR metrics on the "
        f"{sizes.get('test_clicked', '?')} clicked test rows (purchase label), pCTCVR = served "
        "pCTR x pCVR on every test row. `clicked_only`: the same CVR tower fitted on the "
        f"{sizes.get('train_clicked', '?')} clicked training rows alone."
        + (
            " `oracle`: the simulator's true probabilities; `pcvr_ece_vs_oracle` is the ECE "
            "against them (no label noise), `pcvr_bias_unclicked` the mean pCVR error on "
            "unclicked rows (where a clicked-only model saw no label)."
            if oracle
            else ""
        ),
        "",
    ]


def write_report(
    out: Path, report: Mapping[str, Any], curves: Mapping[str, ReliabilityCurve]
) -> Path:
    """Write ``report.md`` (and ``plots/*.png``) into ``out``; returns the Markdown path."""
    plots = out / PLOTS
    plots.mkdir(parents=True, exist_ok=True)
    models, baselines = report["models"], report["baselines"]
    chosen = report.get("chosen", {})
    lines = ["# Training report", ""]
    split = report["split"]
    lines += [
        "## Split",
        "",
        f"Kind **{split['kind']}**, test fraction {split['test_fraction']}, "
        f"valid fraction {split['valid_fraction']}"
        + (
            f"; cuts: valid after {split['valid_cut']}, test after {split['test_cut']}"
            if "test_cut" in split
            else ""
        )
        + (
            f"; retrieval tunes on a validation part as long as test's "
            f"({split['retrieval_valid_fraction']} of the events, after "
            f"{split['retrieval_valid_cut']})"
            if "retrieval_valid_cut" in split
            else ""
        )
        + ". Models learn on train, are tuned/calibrated/chosen on valid, scored on test.",
        "",
    ]
    for what in ("ctr", "retrieval"):
        if what in split:
            rows = [(part, s["rows"], s["users"]) for part, s in sorted(split[what].items())]
            lines += [
                f"{what} rows per part:",
                "",
                markdown_table(("part", "rows", "users"), rows),
                "",
            ]

    ctr = {k.removeprefix("ctr_"): v for k, v in models.items() if k.startswith("ctr_")}
    if ctr:
        oracle = baselines.get("ctr_oracle")
        header = ["model", *CTR_COLUMNS] + (["AUC / oracle AUC"] if oracle else [])
        rows = []
        for name, m in ctr.items():
            label = f"{name} (shipped as `ctr`)" if chosen.get("ctr") == name else name
            row: list[object] = [label, *(m.get(c) for c in CTR_COLUMNS)]
            if oracle:
                row.append(m["auc"] / oracle["auc"])
            rows.append(row)
        for name, m in baselines.items():
            if name.startswith("ctr_"):
                row = [f"baseline: {name.removeprefix('ctr_')}", *(m.get(c) for c in CTR_COLUMNS)]
                if oracle:
                    row.append(m["auc"] / oracle["auc"])
                rows.append(row)
        lines += [
            "## CTR (test split, calibrated pCTR)",
            "",
            markdown_table(header, rows),
            "",
            "ECE: 10 equal-width bins. The shipped model has the lowest valid logloss. "
            + (
                "`oracle` is the simulator's true click probability on the same rows."
                if oracle
                else ""
            ),
            "",
        ]
        for name, curve in curves.items():
            file = f"reliability_{name}.png"
            reliability_plot(name, curve, plots / file)
            lines.append(f"![reliability {name}]({PLOTS}/{file})")
        lines.append("")

    if "cvr" in report:
        lines += cvr_section(report["cvr"])

    retrieval = {
        k.removeprefix("retrieval_"): v for k, v in models.items() if k.startswith("retrieval_")
    }
    board = report.get("leaderboard", {}).get("retrieval")
    if board:
        lines += leaderboard_section(board, report.get("why", {}).get("retrieval", ""))
        tested = {row["name"]: row["test"] for row in board if row.get("test")}
        retrieval_plot(tested, plots / "retrieval.png", chosen.get("retrieval"))
        lines += [f"![retrieval]({PLOTS}/retrieval.png)", ""]
    elif retrieval:
        base = {k: v for k, v in baselines.items() if not k.startswith("ctr_")}
        rows = []
        for name, m in {**retrieval, **base}.items():
            label = name
            if name in base:
                label = f"baseline: {name}"
            elif chosen.get("retrieval") == name:
                label = f"{name} (shipped as `retrieval`)"
            rows.append([label, *(m.get(c) for c in RETRIEVAL_COLUMNS)])
        lines += [
            "## Retrieval (test split, top-20 over items unseen in train/valid)",
            "",
            markdown_table(("model", *RETRIEVAL_COLUMNS), rows),
            "",
            "The shipped model has the best valid Recall@20.",
            "",
        ]
        retrieval_plot({**retrieval, **base}, plots / "retrieval.png")
        lines += [f"![retrieval]({PLOTS}/retrieval.png)", ""]

    profiles = report.get("profiles")
    if profiles:
        rows = sorted(profiles["rfm_segments"].items())
        lines += [
            "## Profiles",
            "",
            f"{profiles['users']} users; "
            + (
                f"K-means k = {profiles['kmeans_k']}."
                if profiles.get("kmeans_k")
                else "no K-means segments (too few users)."
            ),
            "",
            markdown_table(("RFM segment", "users"), rows),
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
