"""Bad input: every public function raises a TypeError or ValueError whose
message names the argument ("x: ..."), says what was expected and what came.

Each public function is wrapped below in a small caller whose defaults are a
valid call (B = 4 rows, D = 2 columns, C = 3 classes); a test overrides one
argument with a bad value. TypeError means the wrong kind of thing, ValueError
the right kind with a wrong value (refloss/_checks.py).

Also here: RunningCenters keeps its state bit for bit when an update raises,
and an empty batch is not an error.
"""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import refloss as rl

C, D = 3, 2
X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [-1.0, 0.5]])
Y = np.array([[1.0, 1.0], [0.0, -1.0], [3.0, 0.0]])
B_ = np.array([[1.0, 1.0], [0.0, 2.0], [2.0, -1.0], [0.5, 0.5]])
LABELS = np.array([0, 1, 2, 0])
CENTERS = np.array([[0.0, 0.5], [1.0, 0.0], [2.0, 1.0]])
SUMS = np.array([[-1.0, 1.5], [1.0, 0.0], [2.0, 2.0]])
COUNTS = np.array([2, 1, 1])
G = np.ones((4, 3))  # upstream gradient of pairwise_distances(X, Y)


# --------------------------------------------------------------------------
# callers: the defaults of each make a valid call


def pairwise(x=X, y=Y, metric="euclidean"):
    return rl.pairwise_distances(x, y, metric=metric)


def paired(a=X, b=B_, metric="euclidean"):
    return rl.paired_distances(a, b, metric=metric)


def l2_normalize(x=X):
    return rl.l2_normalize(x)


def center_loss(x=X, labels=LABELS, centers=CENTERS, reduction="sum"):
    return rl.center_loss(x, labels, centers, reduction=reduction)


def center_stats(x=X, labels=LABELS, num_classes=C):
    return rl.center_stats(x, labels, num_classes)


def update_centers(centers=CENTERS, x=X, labels=LABELS, rule="wen", alpha=0.5):
    return rl.update_centers(centers, x, labels, rule=rule, alpha=alpha)


def update_from_stats(centers=CENTERS, sums=SUMS, counts=COUNTS, rule="wen", alpha=0.5):
    return rl.update_centers_from_stats(centers, sums, counts, rule=rule, alpha=alpha)


def running_centers(num_classes=C, dim=D, rule="wen", alpha=0.5, like=None, init=None):
    return rl.RunningCenters(num_classes, dim, rule=rule, alpha=alpha, like=like, init=init)


def rc_update(x=X, labels=LABELS, like=X):
    return rl.RunningCenters(C, D, like=like).update(x, labels)


def rc_update_from_stats(sums=SUMS, counts=COUNTS, like=X):
    return rl.RunningCenters(C, D, like=like).update_from_stats(sums, counts)


def vjp_center_loss(x=X, labels=LABELS, centers=CENTERS, reduction="sum"):
    return rl.vjp(rl.center_loss, x, labels, centers, reduction=reduction)


def value_and_grad_center_loss(x=X, labels=LABELS, centers=CENTERS, reduction="sum"):
    return rl.value_and_grad(rl.center_loss, x, labels, centers, reduction=reduction)


def vjp_paired(a=X, b=B_, metric="euclidean"):
    return rl.vjp(rl.paired_distances, a, b, metric=metric)


def pullback(g=G, x=X, y=Y):
    _, pull = rl.vjp(rl.pairwise_distances, x, y)
    return pull(g)


FUNCS = {
    f.__name__: f
    for f in (
        pairwise, paired, l2_normalize, center_loss, center_stats, update_centers,
        update_from_stats, running_centers, rc_update, rc_update_from_stats,
        vjp_center_loss, value_and_grad_center_loss, vjp_paired, pullback,
    )
}


def cases(*pairs):
    """``pytest.param(caller, arg, id="caller-arg")`` for each (caller, arg)."""
    return [pytest.param(FUNCS[f], arg, id=f"{f}-{arg}") for f, arg in pairs]


def names(*args: str) -> str:
    """Regex alternation of argument names, for a message prefix."""
    return "|".join(re.escape(a) for a in args)


def test_every_default_call_is_valid():
    for f in FUNCS.values():
        f()


# --------------------------------------------------------------------------
# not an array


ARRAY_ARGS = cases(
    ("pairwise", "x"), ("pairwise", "y"), ("paired", "a"), ("paired", "b"),
    ("l2_normalize", "x"),
    ("center_loss", "x"), ("center_loss", "labels"), ("center_loss", "centers"),
    ("center_stats", "x"), ("center_stats", "labels"),
    ("update_centers", "centers"), ("update_centers", "x"), ("update_centers", "labels"),
    ("update_from_stats", "centers"), ("update_from_stats", "sums"),
    ("update_from_stats", "counts"),
    ("rc_update", "x"), ("rc_update", "labels"),
    ("rc_update_from_stats", "sums"), ("rc_update_from_stats", "counts"),
    ("vjp_center_loss", "x"), ("value_and_grad_center_loss", "x"),
    ("pullback", "g"),
)


@pytest.mark.parametrize(("fn", "arg"), ARRAY_ARGS)
def test_list_instead_of_array(fn, arg):
    bad = np.asarray(inspect.signature(fn).parameters[arg].default).tolist()
    with pytest.raises(TypeError, match=rf"^{arg}: expected .*array"):
        fn(**{arg: bad})


@pytest.mark.parametrize(
    ("fn", "arg"),
    cases(("running_centers", "like"), ("running_centers", "init")),
)
def test_running_centers_list_instead_of_array(fn, arg):
    with pytest.raises(TypeError, match=rf"^{arg}: expected .*array"):
        fn(**{arg: CENTERS.tolist()})


REQUIRED_ARRAY_ARGS = [
    p for p in ARRAY_ARGS if p.id != "pairwise-y"  # y=None means y=x
]


@pytest.mark.parametrize(("fn", "arg"), REQUIRED_ARRAY_ARGS)
def test_none_for_required_array(fn, arg):
    with pytest.raises(TypeError, match=rf"^{arg}: expected .*array"):
        fn(**{arg: None})


# --------------------------------------------------------------------------
# wrong rank


EMBEDDING_ARGS = cases(
    ("pairwise", "x"), ("pairwise", "y"), ("paired", "a"), ("paired", "b"),
    ("l2_normalize", "x"),
    ("center_loss", "x"), ("center_loss", "centers"), ("center_stats", "x"),
    ("update_centers", "centers"), ("update_centers", "x"),
    ("update_from_stats", "centers"), ("update_from_stats", "sums"),
    ("rc_update", "x"), ("rc_update_from_stats", "sums"),
    ("vjp_center_loss", "x"), ("value_and_grad_center_loss", "x"),
)


@pytest.mark.parametrize(("fn", "arg"), EMBEDDING_ARGS)
def test_1d_embeddings(fn, arg):
    bad = inspect.signature(fn).parameters[arg].default[0]
    with pytest.raises(ValueError, match=rf"^{arg}: expected .*(2-D|shape)"):
        fn(**{arg: bad})


@pytest.mark.parametrize(("fn", "arg"), EMBEDDING_ARGS)
def test_3d_embeddings(fn, arg):
    bad = inspect.signature(fn).parameters[arg].default[..., None]
    with pytest.raises(ValueError, match=rf"^{arg}: expected .*(2-D|shape)"):
        fn(**{arg: bad})


@pytest.mark.parametrize("bad", [CENTERS[0], CENTERS[..., None]], ids=["1d", "3d"])
def test_running_centers_init_wrong_rank(bad):
    with pytest.raises(ValueError, match=r"^init: expected .*shape"):
        running_centers(init=bad)


LABEL_FUNCS = ["center_loss", "center_stats", "update_centers", "rc_update",
               "vjp_center_loss", "value_and_grad_center_loss"]


@pytest.mark.parametrize("fn", [FUNCS[f] for f in LABEL_FUNCS], ids=LABEL_FUNCS)
def test_2d_labels(fn):
    with pytest.raises(ValueError, match=r"^labels: expected .*1-D"):
        fn(labels=LABELS[:, None])


@pytest.mark.parametrize(
    ("fn", "arg"), cases(("update_from_stats", "counts"), ("rc_update_from_stats", "counts"))
)
def test_2d_counts(fn, arg):
    with pytest.raises(ValueError, match=rf"^{arg}: expected .*shape"):
        fn(**{arg: COUNTS[:, None]})


# --------------------------------------------------------------------------
# mismatched sizes


@pytest.mark.parametrize("fn", [FUNCS[f] for f in LABEL_FUNCS], ids=LABEL_FUNCS)
def test_labels_length_differs_from_rows(fn):
    with pytest.raises(ValueError, match=r"^labels: expected .*entries"):
        fn(labels=LABELS[:3])


def test_paired_row_counts_differ():
    with pytest.raises(ValueError, match=r"^b: expected .*rows"):
        paired(b=B_[:3])


X3 = np.concatenate([X, X[:, :1]], axis=1)  # D + 1 columns


@pytest.mark.parametrize(
    ("fn", "kwargs", "arg"),
    [
        pytest.param(pairwise, {"y": Y[:, :1]}, "y", id="pairwise-y"),
        pytest.param(paired, {"b": B_[:, :1]}, "b", id="paired-b"),
        pytest.param(center_loss, {"centers": CENTERS[:, :1]}, "centers", id="center_loss-centers"),
        pytest.param(update_centers, {"centers": CENTERS[:, :1]}, "centers",
                     id="update_centers-centers"),
        pytest.param(update_from_stats, {"sums": SUMS[:, :1]}, "sums", id="update_from_stats-sums"),
        pytest.param(rc_update, {"x": X3}, "x", id="rc_update-x"),
        pytest.param(rc_update_from_stats, {"sums": SUMS[:, :1]}, "sums",
                     id="rc_update_from_stats-sums"),
        pytest.param(vjp_center_loss, {"centers": CENTERS[:, :1]}, "centers",
                     id="vjp_center_loss-centers"),
    ],
)
def test_dims_differ(fn, kwargs, arg):
    with pytest.raises(ValueError, match=rf"^{arg}: expected .*(columns|shape)"):
        fn(**kwargs)


@pytest.mark.parametrize(
    ("fn", "arg"), cases(("update_from_stats", "counts"), ("rc_update_from_stats", "counts"))
)
def test_counts_length_differs_from_classes(fn, arg):
    with pytest.raises(ValueError, match=rf"^{arg}: expected .*shape"):
        fn(**{arg: COUNTS[:2]})


# --------------------------------------------------------------------------
# dtypes


@pytest.mark.parametrize(("fn", "arg"), EMBEDDING_ARGS)
def test_integer_embeddings(fn, arg):
    bad = inspect.signature(fn).parameters[arg].default.astype(np.int64)
    with pytest.raises(TypeError, match=rf"^{arg}: expected .*floating"):
        fn(**{arg: bad})


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [({"like": X.astype(np.int64)}, "like"), ({"init": CENTERS.astype(np.int64)}, "init")],
    ids=["like", "init"],
)
def test_running_centers_integer_like_or_init(kwargs, arg):
    with pytest.raises(TypeError, match=rf"^{arg}: expected .*floating"):
        running_centers(**kwargs)


@pytest.mark.parametrize("dtype", [np.float64, np.bool_], ids=["float", "bool"])
@pytest.mark.parametrize("fn", [FUNCS[f] for f in LABEL_FUNCS], ids=LABEL_FUNCS)
def test_non_integer_labels(fn, dtype):
    with pytest.raises(TypeError, match=r"^labels: expected .*integer"):
        fn(labels=(LABELS > 0).astype(dtype))


@pytest.mark.parametrize(
    ("fn", "kwargs", "arg"),
    [
        pytest.param(pairwise, {"x": X.astype(np.float32)}, "y", id="pairwise-y"),
        pytest.param(paired, {"a": X.astype(np.float32)}, "b", id="paired-b"),
        pytest.param(center_loss, {"x": X.astype(np.float32)}, "centers",
                     id="center_loss-centers"),
        pytest.param(update_centers, {"x": X.astype(np.float32)}, "centers",
                     id="update_centers-centers"),
        pytest.param(update_from_stats, {"sums": SUMS.astype(np.float32)}, "sums",
                     id="update_from_stats-sums"),
        pytest.param(rc_update, {"x": X.astype(np.float32)}, "x", id="rc_update-x"),
        pytest.param(rc_update_from_stats, {"sums": SUMS.astype(np.float32)}, "sums",
                     id="rc_update_from_stats-sums"),
    ],
)
def test_float32_with_float64(fn, kwargs, arg):
    with pytest.raises(TypeError, match=rf"^{arg}: expected .*dtype"):
        fn(**kwargs)


# --------------------------------------------------------------------------
# label range


@pytest.mark.parametrize("bad", [-1, C], ids=["negative", "num_classes"])
@pytest.mark.parametrize("fn", [FUNCS[f] for f in LABEL_FUNCS], ids=LABEL_FUNCS)
def test_labels_out_of_range(fn, bad):
    labels = LABELS.copy()
    labels[2] = bad
    with pytest.raises(ValueError, match=r"^labels: expected .*\[0, 3\)"):
        fn(labels=labels)


# --------------------------------------------------------------------------
# libraries and devices


MIXED = [
    # (caller, arguments to move, names a message may start with)
    pytest.param(pairwise, ("y",), ("x", "y"), id="pairwise-y"),
    pytest.param(paired, ("b",), ("a", "b"), id="paired-b"),
    pytest.param(center_loss, ("centers",), ("x", "labels", "centers"), id="center_loss-centers"),
    pytest.param(center_loss, ("labels",), ("x", "labels", "centers"), id="center_loss-labels"),
    pytest.param(center_stats, ("labels",), ("x", "labels"), id="center_stats-labels"),
    pytest.param(update_centers, ("x", "labels"), ("centers", "x", "labels"),
                 id="update_centers-x,labels"),
    pytest.param(update_from_stats, ("sums",), ("centers", "sums", "counts"),
                 id="update_from_stats-sums"),
    pytest.param(running_centers, ("init",), ("like", "init"), id="running_centers-init"),
    pytest.param(rc_update, ("x", "labels"), ("x", "labels"), id="rc_update-x,labels"),
    pytest.param(rc_update_from_stats, ("sums", "counts"), ("sums", "counts"),
                 id="rc_update_from_stats-sums,counts"),
    pytest.param(pullback, ("g",), ("g",), id="pullback-g"),
]


def _array_defaults(fn):
    defaults = {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if isinstance(p.default, np.ndarray)
    }
    if fn is running_centers:
        defaults = {"like": X, "init": CENTERS}
    return defaults


@pytest.mark.parametrize(("fn", "moved", "allowed"), MIXED)
def test_numpy_with_torch(fn, moved, allowed):
    torch = pytest.importorskip("torch")
    args = {k: torch.asarray(v) if k in moved else v for k, v in _array_defaults(fn).items()}
    # the prefix names the arguments involved, e.g. "x, y:" or "g:"
    prefix = rf"[^:]*\b({names(*allowed)})\b[^:]*"
    with pytest.raises(TypeError, match=rf"^{prefix}: expected .*one library"):
        fn(**args)


@pytest.mark.parametrize(("fn", "moved", "allowed"), MIXED)
def test_arrays_on_different_devices(fn, moved, allowed):
    strict = pytest.importorskip("array_api_strict")
    strict.set_array_api_strict_flags(api_version="2024.12")
    args = {
        k: strict.asarray(v, device=strict.Device("device1") if k in moved else strict.Device())
        for k, v in _array_defaults(fn).items()
    }
    with pytest.raises(ValueError, match=rf"^({names(*allowed)}): expected .*device"):
        fn(**args)


# --------------------------------------------------------------------------
# options


@pytest.mark.parametrize(
    ("fn", "arg", "bad"),
    [
        pytest.param(pairwise, "metric", "manhattan", id="pairwise-metric"),
        pytest.param(pairwise, "metric", None, id="pairwise-metric-None"),
        pytest.param(paired, "metric", "l1", id="paired-metric"),
        pytest.param(vjp_paired, "metric", "cosin", id="vjp_paired-metric"),
        pytest.param(center_loss, "reduction", "avg", id="center_loss-reduction"),
        pytest.param(center_loss, "reduction", "mean_nonzero",
                     id="center_loss-reduction-mean_nonzero"),
        pytest.param(value_and_grad_center_loss, "reduction", "total",
                     id="value_and_grad_center_loss-reduction"),
        pytest.param(update_centers, "rule", "sgd", id="update_centers-rule"),
        pytest.param(update_from_stats, "rule", "sgd", id="update_from_stats-rule"),
        pytest.param(running_centers, "rule", "sgd", id="running_centers-rule"),
    ],
)
def test_unknown_option(fn, arg, bad):
    with pytest.raises(ValueError, match=rf"^{arg}: expected one of .*got {re.escape(repr(bad))}"):
        fn(**{arg: bad})


@pytest.mark.parametrize("fn", [update_centers, update_from_stats],
                         ids=["update_centers", "update_from_stats"])
def test_rule_mean_points_at_running_centers(fn):
    with pytest.raises(ValueError, match=r"^rule: expected .*RunningCenters"):
        fn(rule="mean")


ALPHA_FUNCS = [update_centers, update_from_stats, running_centers]
ALPHA_IDS = ["update_centers", "update_from_stats", "running_centers"]


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")], ids=["negative", "above_1", "nan"])
@pytest.mark.parametrize("fn", ALPHA_FUNCS, ids=ALPHA_IDS)
def test_alpha_outside_unit_interval(fn, bad):
    with pytest.raises(ValueError, match=r"^alpha: expected .*\[0, 1\]"):
        fn(alpha=bad)


@pytest.mark.parametrize("bad", ["0.5", None, [0.5]], ids=["str", "None", "list"])
@pytest.mark.parametrize("fn", ALPHA_FUNCS, ids=ALPHA_IDS)
def test_alpha_not_a_number(fn, bad):
    with pytest.raises(TypeError, match=r"^alpha: expected .*number"):
        fn(alpha=bad)


@pytest.mark.parametrize("bad", [0, -1], ids=["zero", "negative"])
@pytest.mark.parametrize("fn", [center_stats, running_centers],
                         ids=["center_stats", "running_centers"])
def test_num_classes_not_positive(fn, bad):
    with pytest.raises(ValueError, match=r"^num_classes: expected .*>= 1"):
        fn(num_classes=bad)


@pytest.mark.parametrize("bad", [3.0, "3", None, True], ids=["float", "str", "None", "bool"])
@pytest.mark.parametrize("fn", [center_stats, running_centers],
                         ids=["center_stats", "running_centers"])
def test_num_classes_not_an_int(fn, bad):
    with pytest.raises(TypeError, match=r"^num_classes: expected .*integer"):
        fn(num_classes=bad)


# --------------------------------------------------------------------------
# numbers too large for a float


HUGE = 10**400  # float(HUGE) raises OverflowError: a ValueError here
Y_ROWS = X[::-1].copy()


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        pytest.param(lambda v: rl.batch_hard_triplet_loss(X, LABELS, margin=v), "margin",
                     id="batch_hard-margin"),
        pytest.param(lambda v: rl.triplet_margin_loss(X, Y_ROWS, B_, margin=-v), "margin",
                     id="triplet_margin_loss-negative-margin"),
        pytest.param(lambda v: rl.contrastive_loss_all_pairs(X, LABELS, pos_margin=v),
                     "pos_margin", id="contrastive_loss_all_pairs-pos_margin"),
        pytest.param(lambda v: update_centers(alpha=v), "alpha", id="update_centers-alpha"),
        pytest.param(lambda v: running_centers(alpha=v), "alpha", id="running_centers-alpha"),
        pytest.param(lambda v: center_stats(num_classes=v), "num_classes",
                     id="center_stats-num_classes"),
        pytest.param(lambda v: running_centers(num_classes=v), "num_classes",
                     id="running_centers-num_classes"),
        pytest.param(lambda v: pullback(g=v), "g", id="pullback-g"),
        pytest.param(lambda v: _pml().contrastive_loss(X, LABELS, power=v), "power",
                     id="pml.contrastive_loss-power"),
        pytest.param(lambda v: _torch_nn().pairwise_distance(X, B_, eps=v), "eps",
                     id="torch_nn.pairwise_distance-eps"),
    ],
)
def test_huge_python_int_is_a_value_error(call, arg):
    with pytest.raises(ValueError, match=rf"^{arg}: expected .*got .*integer of about 401 digits"):
        call(HUGE)


def test_num_classes_past_int64_is_a_value_error():
    message = r"^num_classes: expected .*2\*\*63 - 1.*got 9223372036854775808$"
    with pytest.raises(ValueError, match=message):
        center_stats(num_classes=2**63)


def _pml():
    from refloss.compat import pml

    return pml


def _torch_nn():
    from refloss.compat import torch_nn

    return torch_nn


# --------------------------------------------------------------------------
# arrays that pass as arrays but are not plain ones: masked, meta


MORE_ARRAY_ARGS = [
    pytest.param(lambda **kw: rl.batch_all_triplet_loss(kw.get("x", X), kw.get("labels", LABELS)),
                 "x", id="batch_all-x"),
    pytest.param(lambda **kw: rl.batch_all_triplet_loss(kw.get("x", X), kw.get("labels", LABELS)),
                 "labels", id="batch_all-labels"),
    pytest.param(lambda **kw: rl.mine_semihard(kw.get("x", X), kw.get("labels", LABELS)),
                 "labels", id="mine_semihard-labels"),
    pytest.param(lambda **kw: rl.contrastive_loss(kw.get("a", X), B_, kw.get("same", LABELS > 0)),
                 "same", id="contrastive_loss-same"),
]


@pytest.mark.parametrize(("fn", "arg"), ARRAY_ARGS + MORE_ARRAY_ARGS)
def test_masked_array(fn, arg):
    default = _default(fn, arg)
    bad = np.ma.masked_array(default, mask=np.zeros(default.shape, dtype=bool))
    with pytest.raises(TypeError, match=rf"^{arg}: expected a plain array, got a numpy.ma"):
        fn(**{arg: bad})


@pytest.mark.parametrize(("fn", "arg"), ARRAY_ARGS + MORE_ARRAY_ARGS)
def test_meta_tensor(fn, arg):
    torch = pytest.importorskip("torch")
    args = {k: torch.asarray(v) for k, v in _array_defaults(fn).items()}
    args[arg] = torch.asarray(_default(fn, arg)).to("meta")
    with pytest.raises(TypeError, match=rf"^{arg}: expected an array with values, .*meta"):
        fn(**args)


@pytest.mark.parametrize("arg", ["like", "init"])
def test_running_centers_meta_like_or_init(arg):
    torch = pytest.importorskip("torch")
    kwargs = {"like": torch.asarray(X), "init": torch.asarray(CENTERS)}
    kwargs[arg] = kwargs[arg].to("meta")
    with pytest.raises(TypeError, match=rf"^{arg}: expected an array with values, .*meta"):
        running_centers(**kwargs)


def _default(fn, arg):
    param = inspect.signature(fn).parameters.get(arg)
    if param is not None and isinstance(param.default, np.ndarray):
        return param.default
    return {"x": X, "labels": LABELS, "a": X, "same": LABELS > 0}[arg]


# --------------------------------------------------------------------------
# NaN and inf


FINITE_ARGS = [
    *EMBEDDING_ARGS,
    *cases(("pullback", "g")),
    pytest.param(running_centers, "init", id="running_centers-init"),
]


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize(("fn", "arg"), FINITE_ARGS)
def test_non_finite_input(fn, arg, bad):
    default = CENTERS if fn is running_centers else inspect.signature(fn).parameters[arg].default
    value = default.copy()
    value[1, 0] = bad
    with pytest.raises(ValueError, match=rf"^{arg}: expected .*finite"):
        fn(**{arg: value})


# --------------------------------------------------------------------------
# vjp and value_and_grad


@pytest.mark.parametrize(
    ("fn", "args", "kwargs"),
    [
        pytest.param(rl.center_loss, (X, LABELS, CENTERS), {"reduction": "none"},
                     id="center_loss-none"),
        pytest.param(rl.pairwise_distances, (X,), {}, id="pairwise_distances"),
        pytest.param(rl.paired_distances, (X, B_), {}, id="paired_distances"),
        pytest.param(rl.l2_normalize, (X,), {}, id="l2_normalize"),
    ],
)
def test_value_and_grad_of_non_scalar(fn, args, kwargs):
    with pytest.raises(ValueError, match=r"^loss_fn: .*expected a scalar"):
        rl.value_and_grad(fn, *args, **kwargs)


@pytest.mark.parametrize("api", [rl.vjp, rl.value_and_grad], ids=["vjp", "value_and_grad"])
@pytest.mark.parametrize(
    "fn", [np.sum, lambda x: (x * x).sum(), None], ids=["np.sum", "lambda", "None"]
)
def test_not_a_refloss_function(api, fn):
    with pytest.raises(TypeError, match=r"^loss_fn: expected a refloss"):
        api(fn, X)


@pytest.mark.parametrize(
    ("fn", "args", "g"),
    [
        pytest.param(rl.pairwise_distances, (X, Y), G.T, id="matrix-transposed"),
        pytest.param(rl.center_loss, (X, LABELS, CENTERS), np.ones(1), id="scalar-as-(1,)"),
        pytest.param(rl.paired_distances, (X, B_), np.ones(3), id="vector-too-short"),
    ],
)
def test_pullback_g_wrong_shape(fn, args, g):
    _, pull = rl.vjp(fn, *args)
    with pytest.raises(ValueError, match=r"^g: expected shape"):
        pull(g)


@pytest.mark.parametrize("library", ["torch", "array_api_strict"])
def test_pullback_g_from_another_library(library):
    mod = pytest.importorskip(library)
    if library == "array_api_strict":
        mod.set_array_api_strict_flags(api_version="2024.12")
    _, pull = rl.vjp(rl.pairwise_distances, X, Y)
    with pytest.raises(TypeError, match=r"^g: expected .*one library"):
        pull(mod.asarray(G))


NUMPY_NUMBERS = [np.float64(2.0), np.float32(2.0), np.int64(2), np.asarray(2.0)]
NUMPY_NUMBER_IDS = ["float64", "float32", "int64", "0-d array"]


@pytest.mark.parametrize("g", NUMPY_NUMBERS, ids=NUMPY_NUMBER_IDS)
@pytest.mark.parametrize("library", ["torch", "array_api_strict"])
def test_pullback_takes_a_numpy_number_as_a_number(library, g):
    # "a Python number" includes NumPy's scalars (and a 0-d array for a scalar
    # loss) whatever the loss's library; the gradient is that of the float
    mod = pytest.importorskip(library)
    if library == "array_api_strict":
        mod.set_array_api_strict_flags(api_version="2024.12")
    args = (mod.asarray(X), mod.asarray(LABELS), mod.asarray(CENTERS))
    _, pull = rl.vjp(rl.center_loss, *args)
    for got, expected in zip(pull(g), pull(2.0)):
        if expected is None:
            assert got is None
        else:
            np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_pullback_numpy_scalar_broadcasts_like_a_python_number():
    torch = pytest.importorskip("torch")
    _, pull = rl.vjp(rl.pairwise_distances, torch.asarray(X), torch.asarray(Y))
    np.testing.assert_array_equal(pull(np.float32(2.0))[0].numpy(), pull(2.0)[0].numpy())


@pytest.mark.parametrize("g", [np.bool_(True), np.complex128(1.0), True],
                         ids=["np.bool_", "complex128", "bool"])
def test_pullback_non_real_number(g):
    _, pull = rl.vjp(rl.center_loss, X, LABELS, CENTERS)
    with pytest.raises(TypeError, match=r"^g: expected a number"):
        pull(g)


# --------------------------------------------------------------------------
# RunningCenters.load_state_dict


def _state():
    rc = rl.RunningCenters(C, D, like=X)
    rc.update(X, LABELS)
    return rc, rc.state_dict()


@pytest.mark.parametrize("key", ["rule", "alpha", "centers", "sums", "counts"])
def test_load_state_dict_missing_key(key):
    rc, state = _state()
    del state[key]
    with pytest.raises(ValueError, match=rf"^state: expected .*'{key}'"):
        rc.load_state_dict(state)


@pytest.mark.parametrize("key", ["centers", "sums", "counts"])
def test_load_state_dict_wrong_shape(key):
    rc, state = _state()
    state[key] = state[key][:2]
    with pytest.raises(ValueError, match=rf"^state\['{key}'\]: expected shape"):
        rc.load_state_dict(state)


@pytest.mark.parametrize("bad", ["sgd", None], ids=["unknown", "None"])
def test_load_state_dict_bad_rule(bad):
    rc, state = _state()
    state["rule"] = bad
    with pytest.raises(ValueError, match=r"^state\['rule'\]: expected one of"):
        rc.load_state_dict(state)


def test_load_state_dict_bad_alpha():
    rc, state = _state()
    state["alpha"] = 1.5
    with pytest.raises(ValueError, match=r"^state\['alpha'\]: expected .*\[0, 1\]"):
        rc.load_state_dict(state)


@pytest.mark.parametrize("bad", [[], None], ids=["list", "None"])
def test_load_state_dict_not_a_dict(bad):
    rc, _ = _state()
    with pytest.raises(TypeError, match=r"^state: expected a dict"):
        rc.load_state_dict(bad)


# --------------------------------------------------------------------------
# RunningCenters is never left half-updated


def _snapshot(rc):
    """Everything observable, arrays as (dtype, shape, bytes)."""
    def exact(a):
        a = np.asarray(a)
        return (a.dtype, a.shape, a.tobytes())

    out = {k: exact(v) if isinstance(v, np.ndarray) else v for k, v in rc.state_dict().items()}
    out["centers_attr"] = exact(rc.centers)
    out["counts_attr"] = exact(rc.counts)
    return out


def _with_nan(a):
    a = a.copy()
    a[1, 1] = np.nan
    return a


def _state_counts_wrong_shape(rc):
    state = rc.state_dict()
    state["centers"] = state["centers"] + 1.0
    state["counts"] = state["counts"][:2]
    return state


FAILING_UPDATES = {
    "labels_out_of_range": lambda rc: rc.update(X, np.array([0, 1, 3, 0])),
    "float_labels": lambda rc: rc.update(X, LABELS.astype(np.float64)),
    "nan_x": lambda rc: rc.update(_with_nan(X), LABELS),
    "float32_x": lambda rc: rc.update(X.astype(np.float32), LABELS),
    "nan_sums": lambda rc: rc.update_from_stats(_with_nan(SUMS), COUNTS),
    "float32_sums": lambda rc: rc.update_from_stats(SUMS.astype(np.float32), COUNTS),
    "load_state_dict_bad_counts": lambda rc: rc.load_state_dict(_state_counts_wrong_shape(rc)),
}


@pytest.mark.parametrize("cause", list(FAILING_UPDATES))
@pytest.mark.parametrize("rule", ["wen", "ema", "mean"])
def test_running_centers_unchanged_when_update_raises(rule, cause):
    rc = rl.RunningCenters(C, D, rule=rule, alpha=0.3, like=X)
    rc.update(X, LABELS)
    before = _snapshot(rc)
    with pytest.raises((TypeError, ValueError)):
        FAILING_UPDATES[cause](rc)
    assert _snapshot(rc) == before


# --------------------------------------------------------------------------
# an empty batch is not an error


X0 = np.zeros((0, D))
LABELS0 = np.zeros((0,), dtype=np.int64)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_empty_batch_center_loss_is_zero(reduction):
    value = rl.center_loss(X0, LABELS0, CENTERS, reduction=reduction)
    assert value.shape == ()
    assert value.dtype == np.float64
    assert float(value) == 0.0


def test_empty_batch_center_loss_none_is_empty():
    assert rl.center_loss(X0, LABELS0, CENTERS, reduction="none").shape == (0,)


def test_empty_batch_center_loss_gradient_is_zero():
    value, (gx, glabels, gc) = rl.value_and_grad(
        rl.center_loss, X0, LABELS0, CENTERS, reduction="mean"
    )
    assert float(value) == 0.0
    assert gx.shape == (0, D)
    assert glabels is None
    np.testing.assert_array_equal(gc, np.zeros((C, D)))


@pytest.mark.parametrize(
    ("x", "y", "shape"),
    [(X0, None, (0, 0)), (X0, Y, (0, 3)), (X, X0, (4, 0))],
    ids=["x_empty_self", "x_empty", "y_empty"],
)
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_empty_batch_pairwise_distances(x, y, shape, metric):
    d = rl.pairwise_distances(x, y, metric=metric)
    assert d.shape == shape
    assert d.dtype == np.float64


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_empty_batch_paired_distances(metric):
    assert rl.paired_distances(X0, X0, metric=metric).shape == (0,)


def test_empty_batch_l2_normalize():
    assert rl.l2_normalize(X0).shape == (0, D)


def test_empty_batch_center_stats_are_zero():
    sums, counts = rl.center_stats(X0, LABELS0, C)
    np.testing.assert_array_equal(sums, np.zeros((C, D)))
    np.testing.assert_array_equal(counts, np.zeros(C))


@pytest.mark.parametrize("rule", ["wen", "ema"])
def test_empty_batch_update_centers_moves_nothing(rule):
    new = rl.update_centers(CENTERS, X0, LABELS0, rule=rule)
    np.testing.assert_array_equal(new, CENTERS)


@pytest.mark.parametrize("rule", ["wen", "ema", "mean"])
def test_empty_batch_running_centers_moves_nothing(rule):
    rc = rl.RunningCenters(C, D, rule=rule, like=X)
    rc.update(X, LABELS)
    before = _snapshot(rc)
    rc.update(X0, LABELS0)
    assert _snapshot(rc) == before
