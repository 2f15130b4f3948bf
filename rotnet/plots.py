"""Figures saved beside results.json: learning curves, test confusion matrix, rotation examples."""
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from rotnet.data import MEAN, STD  # noqa: E402

ROTATIONS = ("0°", "90°", "180°", "270°")


def _epoch_series(metrics_csv: Path, column: str) -> tuple[list[int], list[float]]:
    epochs, values = [], []
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            if row.get(column):
                epochs.append(int(row["epoch"]) + 1)
                values.append(float(row[column]))
    return epochs, values


def learning_curves(metrics_csv: Path, out: Path, title: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for ax, (name, train_col, val_col) in zip(
        axes, (("loss", "train/loss_epoch", "val/loss"), ("accuracy", "train/acc", "val/acc"))
    ):
        for label, column, style in (("train", train_col, ".-"), ("val", val_col, "o-")):
            epochs, values = _epoch_series(metrics_csv, column)
            if values:
                ax.plot(epochs, values, style, label=label, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    fig.suptitle(title)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def confusion_matrix(matrix: torch.Tensor, class_names, out: Path, title: str) -> None:
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * n, 0.8 + 0.5 * n), constrained_layout=True)
    ax.imshow(matrix, cmap="Blues")
    for i in range(n):
        for j in range(n):
            value = int(matrix[i, j])
            ax.text(j, i, value, ha="center", va="center", fontsize=7,
                    color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks(range(n), class_names)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def rotation_examples(examples: dict[str, torch.Tensor], out: Path) -> None:
    """Test images as the network saw them, titled "predicted (true)", wrong ones in red."""
    x, pred, y = examples["x"], examples["pred"], examples["y"]
    cols = 8
    rows = (len(y) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25), squeeze=False, constrained_layout=True)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, p, t in zip(axes.flat, x, pred.tolist(), y.tolist()):
        ax.imshow(image[0] * STD + MEAN, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{ROTATIONS[p]} ({ROTATIONS[t]})", fontsize=7, color="black" if p == t else "red")
    fig.suptitle("rotation predicted (true)", fontsize=9)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def save_run_figures(out: Path, stage: str, module) -> list[Path]:
    saved = []
    if (out / "metrics.csv").is_file():
        learning_curves(out / "metrics.csv", out / "learning_curves.png", f"{stage}: learning curves")
        saved.append(out / "learning_curves.png")
    names = ROTATIONS if stage == "pretext" else [str(d) for d in range(10)]
    confusion_matrix(module.test_confusion_matrix, names, out / "confusion_matrix.png",
                     f"{stage}: test confusion matrix")
    saved.append(out / "confusion_matrix.png")
    if stage == "pretext" and module.test_examples:
        rotation_examples(module.test_examples, out / "rotation_examples.png")
        saved.append(out / "rotation_examples.png")
    return saved


def label_curve(rows: list[dict], out: Path) -> None:
    """Test accuracy against labels per class (log axis), mean ± std over seeds, one line per stage."""
    fig, ax = plt.subplots(figsize=(4.6, 3.3), constrained_layout=True)
    for stage, marker in zip(dict.fromkeys(r["stage"] for r in rows), "osd^v"):
        points = sorted((r["labels_per_class"], r["mean"], r["std"], r["n"]) for r in rows if r["stage"] == stage)
        x, mean, std, n = zip(*points)
        ax.errorbar(x, [100 * m for m in mean], yerr=[100 * s for s in std], marker=marker, capsize=3,
                    linewidth=1.4, markersize=4, label=f"{stage} (n = {min(n)}" + (f"-{max(n)})" if max(n) > min(n) else ")"))
    ax.set_xscale("log")
    ticks = sorted({r["labels_per_class"] for r in rows})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("labeled images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, loc="lower right")
    ax.set_title("MNIST, mean ± std over label draws", fontsize=10)
    fig.savefig(out, dpi=200)
    plt.close(fig)
