"""The implementations ``refloss crosscheck`` (no target) checks, when installed.

Each :class:`Entry` names one public implementation, how to build it as a
candidate callable (importing its package only then), the compat preset that
should reproduce it exactly, the reference function (with the options that
express the implementation's defaults in refloss terms) and a note with the
semantic difference from the reference that PEERS.md documents. The entries
whose packages are missing are counted in one "not installed" line with the
``pip install`` that adds them; one whose preset module or function is
missing is listed as "no preset" — the table never fails on an absent
optional piece. The NumPy entries need nothing but refloss: each loss's
analytic gradient against central differences of its value.

To add an implementation, append an :class:`Entry` to :data:`ENTRIES`; the
candidate factory returns a function whose parameter names say which input
goes where (``embeddings, labels``; ``y_true, y_pred``; ``anchor, positive,
negative``; ``a, b, same``), and every lookup into the package is a
``getattr`` by name, so a rename upstream is a one-line change here.

Entries whose names could not be checked against an installed package
(TensorFlow Addons does not install on current Python) are marked
``verified=False``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ENTRIES", "Entry", "entries", "get"]


@dataclass(frozen=True)
class Entry:
    """One known implementation and what it is checked against."""

    key: str  # short id: `refloss crosscheck --only KEY`, replay as "known:KEY"
    name: str  # as shown in the table
    requires: tuple[str, ...]  # modules the candidate needs
    framework: str  # "numpy", "torch", "jax" or "tensorflow"
    make: Callable[[], Callable]  # builds the candidate (imports happen here)
    reference: str  # a refloss function name
    reference_kwargs: dict = field(default_factory=dict)
    preset: str | None = None  # "refloss.compat.module:function"
    preset_kwargs: dict = field(default_factory=dict)
    inputs: str = "labeled batch"
    note: str = ""  # the documented difference from the reference
    must_match: str = "preset"  # which check has to agree: "preset" or "reference"
    dtype: str = "float64"
    verified: bool = True  # names checked against the installed package
    fixed_shapes: bool = False  # one input shape per kind (frameworks compiling per shape)

    def installed(self) -> bool:
        """Whether every module the candidate needs can be imported."""
        for mod in self.requires:
            try:
                if importlib.util.find_spec(mod) is None:
                    return False
            except (ImportError, ValueError):  # a missing parent package
                return False
        return True

    def missing(self) -> list[str]:
        """The pip distributions of the modules the candidate needs that
        cannot be imported (empty when installed)."""
        out = []
        for mod in self.requires:
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):  # a missing parent package
                found = False
            if not found:
                out.append(DISTRIBUTIONS.get(mod, mod))
        return out

    def candidate(self) -> Callable:
        """A fresh candidate callable (remembering this entry, for replay)."""
        fn = self.make()
        fn.__refloss_candidate__ = f"known:{self.key}"
        return fn

    def strategy(self, dtype: str) -> Any:
        """Inputs of one fixed shape when ``fixed_shapes`` (JAX compiles every
        primitive once per new shape: seconds each), else None (the default
        strategies of the harness)."""
        if not self.fixed_shapes:
            return None
        from refloss.testing import strategies as rst

        ties = dtype == "float64"
        if self.inputs == "triplets":
            return rst.triplets(min_rows=3, max_rows=3, min_dim=2, max_dim=2, dtype=dtype,
                                ties=ties)
        if self.inputs == "pairs":
            return rst.pairs(min_rows=3, max_rows=3, min_dim=2, max_dim=2, dtype=dtype,
                             ties=ties)
        if self.inputs == "batch with centers":
            return rst.center_batches(min_size=6, max_size=6, min_dim=2, max_dim=2,
                                      num_classes=3, dtype=dtype)
        return rst.labeled_batches(min_size=6, max_size=6, min_dim=2, max_dim=2, dtype=dtype,
                                   ties=ties)

    def preset_function(self) -> Callable | None:
        """The compat preset, or None when its module or function is missing."""
        if self.preset is None:
            return None
        mod_name, _, attr = self.preset.partition(":")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            return None
        fn = getattr(mod, attr, None)
        return fn if callable(fn) else None


#: module name -> the pip distribution that installs it (where they differ)
DISTRIBUTIONS = {
    "pytorch_metric_learning": "pytorch-metric-learning",
    "tensorflow_addons": "tensorflow-addons",
}


def _attr(module: str, *path: str) -> Any:
    obj = importlib.import_module(module)
    for name in path:
        obj = getattr(obj, name)
    return obj


# --------------------------------------------------------------------------
# candidate factories: each wraps the real thing in a function whose
# parameter names tell the harness the argument order


def _torch_triplet_margin_loss(**options: Any) -> Callable:
    def make() -> Callable:
        f = _attr("torch.nn.functional", "triplet_margin_loss")

        def candidate(anchor, positive, negative):
            return f(anchor, positive, negative, **options)

        return candidate

    return make


def _torch_triplet_with_distance() -> Callable:
    module = _attr("torch.nn", "TripletMarginWithDistanceLoss")()

    def candidate(anchor, positive, negative):
        return module(anchor, positive, negative)

    return candidate


def _pml_loss(loss: str, miner: str | None = None, miner_kwargs: dict | None = None
              ) -> Callable[[], Callable]:
    def make() -> Callable:
        loss_fn = _attr("pytorch_metric_learning.losses", loss)()
        mine = None
        if miner is not None:
            mine = _attr("pytorch_metric_learning.miners", miner)(**(miner_kwargs or {}))

        def candidate(embeddings, labels):
            if mine is None:
                return loss_fn(embeddings, labels)
            return loss_fn(embeddings, labels, mine(embeddings, labels))

        return candidate

    return make


def _pml_miner(miner: str, **miner_kwargs: Any) -> Callable[[], Callable]:
    def make() -> Callable:
        mine = _attr("pytorch_metric_learning.miners", miner)(**miner_kwargs)

        def candidate(embeddings, labels):
            return tuple(mine(embeddings, labels))

        return candidate

    return make


def _tfa_labeled(name: str) -> Callable[[], Callable]:
    def make() -> Callable:
        f = _attr("tensorflow_addons.losses", name)

        def candidate(y_true, y_pred):
            return f(y_true, y_pred)

        return candidate

    return make


def _tfa_contrastive() -> Callable:
    tf = importlib.import_module("tensorflow")
    f = _attr("tensorflow_addons.losses", "contrastive_loss")

    def candidate(a, b, same):
        # TFA takes distances; the docstring computes them with tf.linalg.norm
        d = tf.linalg.norm(a - b, axis=1)
        return f(tf.cast(same, a.dtype), d)

    return candidate


def _adapter(framework: str, name: str) -> Callable[[], Callable]:
    def make() -> Callable:
        f = _attr(f"refloss.adapters.{framework}", name)

        def candidate(*args):
            return f(*args)

        # the adapter keeps the core's signature: reuse it for the argument order
        candidate.__signature__ = _signature_of(f)
        return candidate

    return make


def _numpy_reference(name: str) -> Callable[[], Callable]:
    """The reference itself as a plain NumPy function: without its VJP rule
    the harness takes its gradient by central differences, so the row checks
    the installed reference's analytic gradient on this machine."""

    def make() -> Callable:
        import refloss

        f = getattr(refloss, name)

        def candidate(*args, **kwargs):
            return f(*args, **kwargs)

        candidate.__signature__ = _signature_of(f)
        return candidate

    return make


def _signature_of(f: Callable) -> Any:
    import inspect

    try:
        return inspect.signature(f)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------
# the registry

_PML_DIFF = (
    "PML normalises the embeddings (LpDistance(normalize_embeddings=True)) and averages "
    "the non-zero terms; margin 0.05"
)

ENTRIES: list[Entry] = [
    Entry(
        key="torch.triplet_margin_loss",
        name="torch.nn.functional.triplet_margin_loss",
        requires=("torch",),
        framework="torch",
        make=_torch_triplet_margin_loss(),
        reference="triplet_margin_loss",
        preset="refloss.compat.torch_nn:triplet_margin_loss",
        inputs="triplets",
        note="eps 1e-6 added to every difference: d(x, x) = 1e-6·√D; clamp_min passes "
             "gradient 1 at a zero hinge",
    ),
    Entry(
        key="torch.triplet_margin_loss.swap",
        name="torch.nn.functional.triplet_margin_loss(swap=True)",
        requires=("torch",),
        framework="torch",
        make=_torch_triplet_margin_loss(swap=True),
        reference="triplet_margin_loss",
        reference_kwargs={"swap": True},
        preset="refloss.compat.torch_nn:triplet_margin_loss",
        preset_kwargs={"swap": True},
        inputs="triplets",
        note="eps 1e-6 added to every difference, also in d(p, n)",
    ),
    Entry(
        key="torch.TripletMarginWithDistanceLoss",
        name="torch.nn.TripletMarginWithDistanceLoss()",
        requires=("torch",),
        framework="torch",
        make=_torch_triplet_with_distance,
        reference="triplet_margin_loss",
        preset="refloss.compat.torch_nn:triplet_margin_with_distance_loss",
        inputs="triplets",
        note="default distance PairwiseDistance(): eps 1e-6 added to every difference",
    ),
    Entry(
        key="pml.TripletMarginLoss",
        name="pytorch-metric-learning TripletMarginLoss()",
        requires=("torch", "pytorch_metric_learning"),
        framework="torch",
        make=_pml_loss("TripletMarginLoss"),
        reference="batch_all_triplet_loss",
        reference_kwargs={"margin": 0.05, "normalize": True},
        preset="refloss.compat.pml:triplet_margin_loss",
        note=_PML_DIFF + " (the reference with these options is the same loss)",
    ),
    Entry(
        key="pml.TripletMarginLoss+BatchHardMiner",
        name="pytorch-metric-learning TripletMarginLoss() + BatchHardMiner()",
        requires=("torch", "pytorch_metric_learning"),
        framework="torch",
        make=_pml_loss("TripletMarginLoss", "BatchHardMiner"),
        reference="batch_hard_triplet_loss",
        reference_kwargs={"margin": 0.05, "normalize": True, "reduction": "mean_nonzero"},
        preset="refloss.compat.pml:batch_hard_triplet_margin_loss",
        note=_PML_DIFF,
    ),
    Entry(
        key="pml.TripletMarginLoss+TripletMarginMiner(semihard)",
        name="pytorch-metric-learning TripletMarginLoss() + TripletMarginMiner('semihard')",
        requires=("torch", "pytorch_metric_learning"),
        framework="torch",
        make=_pml_loss("TripletMarginLoss", "TripletMarginMiner",
                       {"type_of_triplets": "semihard"}),
        reference="semihard_triplet_loss",
        reference_kwargs={"margin": 0.05, "normalize": True, "reduction": "mean_nonzero"},
        preset="refloss.compat.pml:semihard_triplet_margin_loss",
        note="PML keeps every triplet with 0 < d_an − d_ap ≤ 0.2 (the miner's margin) and "
             "has no fallback; the reference takes one negative per positive pair "
             "(TensorFlow's rule)",
    ),
    Entry(
        key="pml.ContrastiveLoss",
        name="pytorch-metric-learning ContrastiveLoss()",
        requires=("torch", "pytorch_metric_learning"),
        framework="torch",
        make=_pml_loss("ContrastiveLoss"),
        reference="contrastive_loss_all_pairs",
        reference_kwargs={"power": 1, "normalize": True, "reduction": "mean_nonzero"},
        preset="refloss.compat.pml:contrastive_loss",
        note="PML sums two non-zero means (positive pairs, negative pairs) over ordered pairs; "
             "the reference has one mean over unordered pairs",
    ),
    Entry(
        key="pml.BatchHardMiner",
        name="pytorch-metric-learning BatchHardMiner()",
        requires=("torch", "pytorch_metric_learning"),
        framework="torch",
        make=_pml_miner("BatchHardMiner"),
        reference="mine_batch_hard",
        reference_kwargs={"normalize": True},
        note="same triplets as the reference on normalised embeddings",
        must_match="reference",
    ),
    Entry(
        key="pml.TripletMarginMiner(semihard)",
        name="pytorch-metric-learning TripletMarginMiner('semihard')",
        requires=("torch", "pytorch_metric_learning"),
        framework="torch",
        make=_pml_miner("TripletMarginMiner", type_of_triplets="semihard"),
        reference="mine_semihard",
        reference_kwargs={"normalize": True},
        note="all triplets with 0 < d_an − d_ap ≤ 0.2, not one per positive pair",
        must_match="none",
    ),
    Entry(
        key="tfa.triplet_semihard_loss",
        name="TensorFlow Addons triplet_semihard_loss",
        requires=("tensorflow", "tensorflow_addons"),
        framework="tensorflow",
        make=_tfa_labeled("triplet_semihard_loss"),
        reference="semihard_triplet_loss",
        preset="refloss.compat.tfa:triplet_semihard_loss",
        note="no positive pair: NaN; an anchor without negatives gives m + d_ap",
        dtype="float32",
        verified=False,
    ),
    Entry(
        key="tfa.triplet_hard_loss",
        name="TensorFlow Addons triplet_hard_loss",
        requires=("tensorflow", "tensorflow_addons"),
        framework="tensorflow",
        make=_tfa_labeled("triplet_hard_loss"),
        reference="batch_hard_triplet_loss",
        preset="refloss.compat.tfa:triplet_hard_loss",
        note="averages over all anchors; a singleton anchor counts with d_ap = 0",
        dtype="float32",
        verified=False,
    ),
    Entry(
        key="tfa.contrastive_loss",
        name="TensorFlow Addons contrastive_loss (on tf.linalg.norm distances)",
        requires=("tensorflow", "tensorflow_addons"),
        framework="tensorflow",
        make=_tfa_contrastive,
        reference="contrastive_loss",
        reference_kwargs={"reduction": "none"},
        inputs="pairs",
        note="y = 1 similar, per-pair values; tf.linalg.norm has a NaN gradient at a = b",
        must_match="none",
        dtype="float32",
        verified=False,
    ),
]

_ADAPTED = (
    ("center_loss", "batch with centers"),
    ("contrastive_loss", "pairs"),
    ("contrastive_loss_all_pairs", "labeled batch"),
    ("triplet_margin_loss", "triplets"),
    ("batch_all_triplet_loss", "labeled batch"),
    ("batch_hard_triplet_loss", "labeled batch"),
    ("semihard_triplet_loss", "labeled batch"),
)
# JAX compiles every primitive once per input shape (seconds per loss even at
# one fixed shape), so the table checks a representative subset there
_ADAPTED_JAX = ("center_loss", "contrastive_loss", "triplet_margin_loss",
                "batch_hard_triplet_loss")
for _framework, _requires in (("torch", ("torch",)), ("jax", ("jax",))):
    for _name, _inputs in _ADAPTED:
        if _framework == "jax" and _name not in _ADAPTED_JAX:
            continue
        ENTRIES.append(Entry(
            key=f"adapters.{_framework}.{_name}",
            name=f"refloss.adapters.{_framework}.{_name}",
            requires=_requires,
            framework=_framework,
            make=_adapter(_framework, _name),
            reference=_name,
            inputs=_inputs,
            note="the reference's own analytic gradient through the framework's autograd",
            must_match="reference",
            fixed_shapes=_framework == "jax",
        ))


# NumPy only needs refloss itself: these rows run on every installation
_NUMPY_CHECKED = (*_ADAPTED, ("hardest_negative_triplet_loss", "labeled batch"))
for _name, _inputs in _NUMPY_CHECKED:
    ENTRIES.append(Entry(
        key=f"numpy.{_name}",
        name=f"refloss.{_name} on NumPy (finite differences)",
        requires=(),
        framework="numpy",
        make=_numpy_reference(_name),
        reference=_name,
        inputs=_inputs,
        note="the analytic gradient against central differences of the value",
        must_match="reference",
    ))


def entries() -> list[Entry]:
    """Every known entry, in table order."""
    return list(ENTRIES)


def get(key: str) -> Entry:
    """The entry named ``key``; ValueError listing the keys when there is none."""
    for entry in ENTRIES:
        if entry.key == key:
            return entry
    raise ValueError(
        f"known: no entry {key!r} (known: {', '.join(e.key for e in ENTRIES)})"
    )
