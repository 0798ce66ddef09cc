"""refloss in ten lines: a center loss, its analytic gradient, a center update."""

import numpy as np

import refloss as rl

rng = np.random.default_rng(0)
x = rng.normal(size=(8, 4))                      # embeddings, [batch, dim]
labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])      # integer class labels
centers = np.zeros((4, 4))                       # class centers, [classes, dim]

loss, (gx, _, gc) = rl.value_and_grad(rl.center_loss, x, labels, centers)
centers = rl.update_centers(centers, x, labels, rule="wen", alpha=0.5)
d = rl.pairwise_distances(x)                     # [batch, batch], exact zeros on the diagonal

print(f"center loss {loss:.4f}, |dL/dx| {np.linalg.norm(gx):.4f}, "
      f"max distance {d.max():.4f}")
print("centers after one Eq. 4 step:\n", np.round(centers, 3))
