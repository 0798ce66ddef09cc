"""Figure: which negatives batch-all, batch-hard and semi-hard use, for one anchor.

One small 2-D batch (three classes of four points), euclidean distances,
margin m = 1. For the anchor and one of its positives p:

* batch-all keeps every negative; the terms [d_ap + m - d_an]_+ that are
  non-zero are those of the negatives inside the circle of radius d_ap + m;
* batch-hard pairs the anchor with its farthest positive and its nearest
  negative (``refloss.mine_batch_hard``);
* semi-hard takes the nearest negative strictly farther than p
  (``refloss.mine_semihard``), which lies in the band d_ap < d_an < d_ap + m
  when the band holds one (refloss, like TensorFlow, does not require it).

Every selection is computed by refloss: distances by
``rl.pairwise_distances``, the triplets by the miners, and the batch-all
terms are checked against ``rl.batch_all_triplet_loss(reduction="none")``.

    python docs/figures/triplet_mining.py          # writes docs/figures/triplet_mining.png
    python docs/figures/triplet_mining.py --out /tmp/fig --dpi 50
"""

from __future__ import annotations

import argparse
import pathlib
from dataclasses import dataclass

import numpy as np

import refloss as rl

HERE = pathlib.Path(__file__).resolve().parent
MARGIN = 1.0
ANCHOR = 0
POSITIVE = 1
# class 0 (the anchor's), class 1, class 2
X = np.array([
    [0.0, 0.0], [1.5, 0.6], [-0.7, 0.9], [0.5, -1.2],
    [1.2, -0.5], [2.4, 1.3], [3.2, -0.4], [2.2, -2.0],
    [-1.9, -0.4], [-1.0, 2.9], [-2.9, 1.2], [-0.6, -2.3],
])
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])


@dataclass
class Selection:
    d: np.ndarray                # (B, B) distances
    negatives: np.ndarray        # the anchor's negatives
    batch_all_terms: np.ndarray  # [d_ap + m - d_an]_+ per negative, for (ANCHOR, POSITIVE)
    hard_positive: int
    hard_negative: int
    semihard_negative: int


def select(x: np.ndarray = X, labels: np.ndarray = LABELS, *, anchor: int = ANCHOR,
           positive: int = POSITIVE, margin: float = MARGIN) -> Selection:
    d = rl.pairwise_distances(x)
    negatives = np.flatnonzero(labels != labels[anchor])
    terms = np.maximum(d[anchor, positive] + margin - d[anchor, negatives], 0.0)
    per_pair = rl.batch_all_triplet_loss(x, labels, margin=margin, reduction="none")
    assert np.isclose(terms.sum(), per_pair[anchor, positive]), "batch-all terms"
    a, p, n = rl.mine_batch_hard(x, labels)
    (row,) = np.flatnonzero(a == anchor)
    sa, sp, sn = rl.mine_semihard(x, labels)
    (srow,) = np.flatnonzero((sa == anchor) & (sp == positive))
    return Selection(d, negatives, terms, int(p[row]), int(n[row]), int(sn[srow]))


def plot(sel: Selection, path: pathlib.Path, *, dpi: int = 110, x: np.ndarray = X,
         labels: np.ndarray = LABELS, anchor: int = ANCHOR, positive: int = POSITIVE,
         margin: float = MARGIN) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Wedge

    colours = {0: "tab:blue", 1: "tab:orange", 2: "tab:green"}
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    d_ap = sel.d[anchor, positive]

    def base(ax, title):
        for c, colour in colours.items():
            pts = x[labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=60, color=colour, zorder=3,
                       label=f"class {c}" + (" (anchor's)" if c == labels[anchor] else ""))
        ax.scatter(*x[anchor], marker="*", s=380, color=colours[labels[anchor]],
                   edgecolors="black", zorder=4, label="anchor a")
        ax.set_title(title, fontsize=10)
        ax.set_aspect("equal")
        ax.set_xlim(-3.4, 3.7)
        ax.set_ylim(-3.0, 3.4)
        ax.set_xticks([])
        ax.set_yticks([])

    def link(ax, j, colour, style="-", width=2.0, text=None):
        ax.annotate("", xy=x[j], xytext=x[anchor], zorder=2,
                    arrowprops={"arrowstyle": "-|>", "color": colour, "lw": width,
                                "linestyle": style, "shrinkA": 8, "shrinkB": 6})
        if text:  # beside the end point, on the far side from the anchor
            u = (x[j] - x[anchor]) / np.linalg.norm(x[j] - x[anchor])
            ax.text(*(x[j] + 0.5 * u), text, fontsize=8, color=colour, zorder=5,
                    ha="center", va="center",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})

    # batch-all: every negative, with its term for the pair (a, p)
    ax = axes[0]
    base(ax, f"batch-all: every negative for (a, p)\n"
             f"{int((sel.batch_all_terms > 0).sum())} of {len(sel.negatives)} terms > 0 (red), "
             f"inside radius $d_{{ap}} + m$")
    ax.add_patch(Circle(x[anchor], d_ap + margin, fill=False, ls=":", color="grey"))
    link(ax, positive, "tab:blue", text="p")
    for n, t in zip(sel.negatives, sel.batch_all_terms):
        if t > 0:
            link(ax, n, "tab:red", width=1.6, text=f"{t:.2f}")
        else:
            link(ax, n, "lightgrey", style="--", width=1.0)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8,
               frameon=False)

    # batch-hard: farthest positive, nearest negative
    ax = axes[1]
    base(ax, "batch-hard: farthest positive,\nnearest negative (rl.mine_batch_hard)")
    ax.add_patch(Circle(x[anchor], sel.d[anchor, sel.hard_positive], fill=False, ls="--",
                        color="tab:blue", alpha=0.6))
    link(ax, sel.hard_positive, "tab:blue", text="hardest p")
    link(ax, sel.hard_negative, "tab:red", text="hardest n")

    # semi-hard: nearest negative beyond d_ap, the band (d_ap, d_ap + m)
    ax = axes[2]
    base(ax, "semi-hard: nearest negative with $d_{an} > d_{ap}$\n(rl.mine_semihard)")
    ax.add_patch(Wedge(x[anchor], d_ap + margin, 0, 360, width=margin, color="gold",
                       alpha=0.3, zorder=1, label="band $d_{ap} < d_{an} < d_{ap} + m$"))
    link(ax, positive, "tab:blue", text="p")
    link(ax, sel.semihard_negative, "tab:red", text="semi-hard n")
    ax.legend(handles=[ax.patches[0]], loc="lower right", fontsize=8)

    fig.suptitle("Triplet mining on one batch (euclidean, margin m = 1), computed by refloss",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def main(out: pathlib.Path = HERE, *, dpi: int = 110) -> Selection:
    sel = select()
    out.mkdir(parents=True, exist_ok=True)
    plot(sel, out / "triplet_mining.png", dpi=dpi)
    return sel


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    parser.add_argument("--dpi", type=int, default=110)
    args = parser.parse_args()
    sel = main(args.out, dpi=args.dpi)
    print(f"batch-all terms {np.round(sel.batch_all_terms, 3)}; batch-hard (p, n) = "
          f"({sel.hard_positive}, {sel.hard_negative}); semi-hard n = {sel.semihard_negative}")
