"""Tables of results: one stage=all run against the notebook, and mean ± std over many runs.

python -m rotnet.report DIR   reads every results.json under DIR (a run, a multirun sweep, or
all of outputs/) and writes DIR/summary.md and DIR/summary.csv, and DIR/label_curve.png when
the runs span more than one label budget.
"""
import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

from omegaconf import OmegaConf

NOTEBOOK = {"pretext": "99.53%", "semi": "86.48%", "baseline": "11%", "selftrain": "-"}
MEASURES = {
    "pretext": "rotation accuracy, rotated test set (40,000)",
    "semi": "digit accuracy, test set (10,000)",
    "baseline": "digit accuracy, test set (10,000)",
    "selftrain": "digit accuracy, test set (10,000)",
}
STAGE_ORDER = {"pretext": 0, "semi": 1, "baseline": 2, "selftrain": 3, "probe_block1": 4, "probe_block2": 5,
               "probe_block3": 6}
# Keys that differ between runs without being an experimental condition (label_sweep.* only
# says which points a sweep ran; each point's own budget and seed are in data.* and seed).
NOT_CONDITIONS = {"seed", "run_dir", "pretrained", "resume", "stage"}
NOT_CONDITION_PREFIXES = ("label_sweep.",)


def results_table(results: dict[str, dict]) -> str:
    first = next(iter(results.values()))
    lines = [
        f"# rotnet results (seed {first['seed']}, {first['labels_per_class']} labels per class, "
        f"{first['label_selection']} draw)",
        "",
        "| stage | measured | rotnet | original notebook | epochs | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for stage, r in results.items():
        lines.append(
            f"| {stage} | {MEASURES[stage]} | {100 * r['test_acc']:.2f}% | {NOTEBOOK[stage]} "
            f"| {r['epochs']} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        "The notebook's 11% baseline is a BatchNorm artefact (running statistics left near their",
        "initial values after 20 training steps), not a property of training from scratch.",
        "",
    ]
    return "\n".join(lines)


def _flat(cfg, prefix="") -> dict[str, object]:
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        out.update(_flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def find_runs(root: Path) -> list[tuple[dict, dict]]:
    """(results, flattened run config) for every single-stage results.json under ``root``."""
    runs = []
    for path in sorted(root.rglob("results.json")):
        results = json.loads(path.read_text())
        if "stage" not in results:  # the combined file of a stage=all run
            continue
        config = next((d / "config_resolved.yaml" for d in (path.parent, path.parent.parent)
                       if (d / "config_resolved.yaml").is_file()), None)
        flat = _flat(OmegaConf.to_container(OmegaConf.load(config))) if config else {}
        runs.append((results, flat))
    return runs


def summarize(runs: list[tuple[dict, dict]]) -> tuple[list[str], list[dict]]:
    """Swept keys (those whose value differs between the runs that have them), and one row per stage x condition."""
    keys = {k for k in set().union(*(flat for _, flat in runs)) - NOT_CONDITIONS
            if not k.startswith(NOT_CONDITION_PREFIXES)}
    swept = sorted(k for k in keys if len({json.dumps(flat[k]) for _, flat in runs if k in flat}) > 1)
    swept = [k for k in swept if k != "data.labels_per_class"]
    groups: dict[tuple, list[float]] = {}
    for results, flat in runs:
        key = (results["stage"], results["labels_per_class"], *(flat.get(k) for k in swept))
        groups.setdefault(key, []).append(results["test_acc"])
    rows = []
    for key in sorted(groups, key=lambda k: (STAGE_ORDER.get(k[0], 9), k[1], json.dumps(k[2:]))):
        accs = groups[key]
        rows.append({
            "stage": key[0], "labels_per_class": key[1], **dict(zip(swept, key[2:])), "n": len(accs),
            "mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        })
    return swept, rows


def write_summary(root: Path) -> tuple[str, list[dict]]:
    """Write summary.csv and summary.md under ``root``; return the markdown table and its rows."""
    runs = find_runs(root)
    if not runs:
        raise SystemExit(f"rotnet.report: no results.json under '{root}'. Point it at a run or sweep directory.")
    swept, rows = summarize(runs)
    columns = ["stage", "labels_per_class", *swept, "n", "mean", "std"]
    with open(root / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    head = ["stage", "labels per class", *swept, "n", "test accuracy (mean ± std)"]
    lines = [f"# rotnet summary of {len(runs)} runs under {root}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["stage"], row["labels_per_class"], *(row[k] for k in swept), row["n"],
                 f"{100 * row['mean']:.2f} ± {100 * row['std']:.2f}%"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "std is the sample standard deviation over the n runs (0 when n = 1).", ""]
    table = "\n".join(lines)
    (root / "summary.md").write_text(table)
    return table, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="a run, a multirun sweep, or outputs/")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        sys.exit(f"rotnet.report: '{args.dir}' is not a directory. Point it at a run or sweep directory.")
    table, rows = write_summary(args.dir)
    print(table)
    one_condition = all(set(r) == {"stage", "labels_per_class", "n", "mean", "std"} for r in rows)
    if one_condition and len({r["labels_per_class"] for r in rows}) > 1:  # a label budget curve to draw
        from rotnet.plots import label_curve

        label_curve([r for r in rows if r["stage"] != "pretext"], args.dir / "label_curve.png")
        print(f"label curve: {args.dir / 'label_curve.png'}")


if __name__ == "__main__":
    main()
