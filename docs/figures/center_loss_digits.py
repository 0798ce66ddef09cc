"""Figure: center loss on 2-D deep features (the idea of Wen et al. 2016, Fig. 3).

A small network maps scikit-learn's bundled 8x8 digits (offline, 1,797
images, 10 classes) to a 2-D feature layer followed by a linear softmax head.
It is trained with softmax alone and with softmax + lambda * center loss for a
few lambda, the centers held and updated (Eq. 4, alpha = 0.5) by
``refloss.adapters.torch.CenterLoss``. Each panel shows the held-out
features coloured by class, with the learned centers marked. The title gives
the test accuracy and the intra-class spread: the mean squared distance of a
feature to its class mean, divided by the mean squared distance of the class
means to their mean (scale-free, so the panels compare although their axes
do not).

    python docs/figures/center_loss_digits.py   # writes docs/figures/center_loss_digits.png
    python docs/figures/center_loss_digits.py --quick --out /tmp/fig

Full run: about half a minute on one CPU core; ``--quick`` (the test's size)
a few seconds.
"""

from __future__ import annotations

import argparse
import pathlib
from dataclasses import dataclass

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
LAMBDAS = (0.0, 0.01, 0.1, 1.0)
FULL = {"epochs": 60}
QUICK = {"epochs": 12}


@dataclass
class Run:
    lam: float
    features: np.ndarray  # held-out 2-D features
    labels: np.ndarray
    centers: np.ndarray | None  # None for softmax alone
    accuracy: float
    spread: float


def spread_ratio(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean ||f_i - mean_{y_i}||² over mean ||mean_j - mean||²: intra- over inter-class."""
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    intra = np.mean([np.sum((features[labels == c] - m) ** 2, axis=1).mean()
                     for c, m in zip(classes, means)])
    inter = np.sum((means - means.mean(axis=0)) ** 2, axis=1).mean()
    return float(intra / inter)


def load_data(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(x, digits.target, test_size=0.3, random_state=seed,
                            stratify=digits.target)


def train(lam: float, data, *, epochs: int, seed: int = 0) -> Run:
    """Softmax (+ lam * center loss when lam > 0); features of the held-out split."""
    import refloss.adapters.torch as rt
    import torch

    x_train, x_test, y_train, y_test = (torch.as_tensor(a) for a in data)
    torch.manual_seed(seed)
    features = torch.nn.Sequential(
        torch.nn.Linear(64, 64), torch.nn.PReLU(),
        torch.nn.Linear(64, 32), torch.nn.PReLU(),
        torch.nn.Linear(32, 2),
    )
    head = torch.nn.Linear(2, 10)
    center = rt.CenterLoss(10, 2, rule="wen", alpha=0.5, reduction="mean")
    optimizer = torch.optim.Adam([*features.parameters(), *head.parameters()], lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(x_train), generator=generator).split(128):
            f = features(x_train[batch])
            loss = torch.nn.functional.cross_entropy(head(f), y_train[batch])
            if lam > 0:
                loss = loss + lam * center(f, y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if lam > 0:
                center.update(f, y_train[batch])  # Eq. 4 on the batch's features
    with torch.no_grad():
        f = features(x_test)
        accuracy = float((head(f).argmax(dim=1) == y_test).float().mean())
    f, labels = f.numpy(), y_test.numpy()
    return Run(lam, f, labels, center.centers.numpy() if lam > 0 else None, accuracy,
               spread_ratio(f, labels))


def plot(runs: list[Run], path: pathlib.Path, *, dpi: int = 110) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(3.4 * len(runs), 3.7))
    cmap = plt.get_cmap("tab10")
    for ax, run in zip(axes, runs):
        for c in range(10):
            f = run.features[run.labels == c]
            ax.scatter(f[:, 0], f[:, 1], s=6, color=cmap(c), alpha=0.7, linewidths=0,
                       label=str(c))
        if run.centers is not None:
            ax.scatter(run.centers[:, 0], run.centers[:, 1], marker="X", s=70,
                       c=[cmap(c) for c in range(10)], edgecolors="black", linewidths=0.8)
        name = "softmax only" if run.lam == 0 else f"softmax + {run.lam:g} · center"
        ax.set_title(f"{name}\ntest acc {run.accuracy:.2f}, spread {run.spread:.3f}",
                     fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    axes[0].legend(loc="lower left", fontsize=6, markerscale=2, ncol=2, handletextpad=0.1,
                   columnspacing=0.4, frameon=False)
    fig.suptitle("2-D deep features of held-out digits (× = centers updated by Eq. 4, "
                 "refloss.adapters.torch.CenterLoss)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def main(out: pathlib.Path = HERE, *, quick: bool = False,
         lambdas: tuple[float, ...] = LAMBDAS) -> list[Run]:
    import torch

    torch.set_num_threads(1)  # reproducible sums, and the machine is shared
    data = load_data()
    size = QUICK if quick else FULL
    runs = [train(lam, data, **size) for lam in lambdas]
    out.mkdir(parents=True, exist_ok=True)
    plot(runs, out / "center_loss_digits.png", dpi=60 if quick else 110)
    return runs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    parser.add_argument("--quick", action="store_true", help="the test's small size")
    args = parser.parse_args()
    for run in main(args.out, quick=args.quick):
        print(f"lambda {run.lam:<5g} test accuracy {run.accuracy:.3f} "
              f"intra/inter spread {run.spread:.4f}")
