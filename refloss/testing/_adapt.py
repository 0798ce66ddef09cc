"""No glue for common shapes: what the harness adapts so that a candidate
written as people write it can be called as it is.

* **Tuple outputs** — ``output=N`` (``--output N``) compares output N, e.g.
  the loss of ``(loss, n_triplets)``.
* **A value of shape (1,)** where the reference returns a scalar is compared
  as the scalar, with a note in the report.
* **``same`` conventions** — :class:`SameConvention`: bool (default), 0/1
  int or float, 1 = different, shape ``[B, 1]``; the compat presets whose
  label means "dissimilar" or is a float get theirs automatically.
* **Module parameters as inputs** — a ``torch.nn.Module`` candidate that
  holds a parameter the reference takes as an input (``centers``) is called
  through ``torch.func.functional_call`` with the drawn array in place of
  its parameter, so its gradient is compared too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SameConvention"]

_SAME_DTYPES = {"bool": bool, "int": np.int64, "float": np.float64}
_DIFFERENT = ("1=different", "different", "dissimilar", "1=dissimilar")


@dataclass(frozen=True)
class SameConvention:
    """How a function takes the pair flags: ``dtype`` "bool", "int" or
    "float"; ``one_is_different`` (1 / True = dissimilar pair); ``column``
    (shape ``[B, 1]`` instead of ``[B]``)."""

    dtype: str = "bool"
    one_is_different: bool = False
    column: bool = False

    @classmethod
    def parse(cls, spec: Any, what: str = "same") -> SameConvention:
        """From ``"bool"``, ``"int"``, ``"float,1=different"``,
        ``"int,1=different,column"`` (comma- or space-separated words)."""
        if spec is None:
            return cls()
        if isinstance(spec, SameConvention):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"{what}: expected a string such as 'float,1=different', "
                            f"got {type(spec).__name__}")
        dtype, diff, column = "bool", False, False
        for word in spec.replace(",", " ").split():
            w = word.strip().lower()
            if w in _SAME_DTYPES:
                dtype = w
            elif w in _DIFFERENT:
                diff = True
            elif w in ("1=same", "1=similar", "same", "similar"):
                diff = False
            elif w in ("column", "[b,1]", "b1"):
                column = True
            else:
                raise ValueError(
                    f"{what}: unknown word {word!r} in {spec!r} (expected bool, int or "
                    f"float; 1=different or 1=same; column)"
                )
        return cls(dtype, diff, column)

    @property
    def is_default(self) -> bool:
        return self == SameConvention()

    @property
    def kind(self) -> str:
        return {"bool": "bool", "int": "int", "float": "float"}[self.dtype]

    def convert(self, same: np.ndarray) -> np.ndarray:
        """The flags (True = similar) in this convention."""
        v = np.asarray(same, dtype=bool)
        v = ~v if self.one_is_different else v
        v = v.astype(_SAME_DTYPES[self.dtype])
        return v[:, None] if self.column else v

    def words(self) -> str:
        one = "1 = different" if self.one_is_different else "1 = same"
        shape = ", shape [B, 1]" if self.column else ""
        return f"{self.dtype} ({one}){shape}"


#: compat presets whose pair label is not refloss's bool "same"
REFERENCE_SAME = {
    "refloss.compat.hadsell.contrastive_loss": SameConvention("float", True),
    "refloss.compat.tfa.contrastive_loss": SameConvention("float"),
    "refloss.compat.tf_contrib.contrastive_loss": SameConvention("float"),
}


def module_parameters(candidate: Callable, missing: list[str], synonyms: dict
                      ) -> dict[str, str]:
    """``{role: parameter name}`` for the ``missing`` roles a torch module
    candidate holds as parameters (``self.centers``), else {}."""
    obj = inspect.unwrap(candidate)
    named = getattr(obj, "named_parameters", None)
    if not callable(named) or not missing:
        return {}
    found = {}
    for pname, _ in named():
        role = synonyms.get(pname.rsplit(".", 1)[-1].lower())
        if role in missing and role not in found:
            found[role] = pname
    return found if set(found) == set(missing) else {}


def parameter_shape(candidate: Callable, pname: str) -> tuple[int, ...]:
    obj = inspect.unwrap(candidate)
    return tuple(dict(obj.named_parameters())[pname].shape)


def adapted(candidate: Callable, *, roles: list[str], output: int | None,
            params: dict[str, str], scalar: Callable[[], bool],
            note: Callable[[str], None]) -> Callable:
    """The candidate as the harness calls it: module parameters from the
    arguments, output ``output`` of a tuple, a (1,) value as a scalar."""
    module = inspect.unwrap(candidate) if params else None
    by_index = {i: params[r] for i, r in enumerate(roles) if r in params}

    def call(*args: Any, **kwargs: Any) -> Any:
        if module is not None:
            from torch.func import functional_call

            values = {pname: args[i] for i, pname in by_index.items()}
            rest = tuple(a for i, a in enumerate(args) if i not in by_index)
            out = functional_call(module, values, rest, kwargs)
        else:
            out = candidate(*args, **kwargs)
        if output is not None:
            if not isinstance(out, (tuple, list)):
                raise TypeError(f"output={output}: the candidate returned one value, "
                                f"not a tuple")
            if not -len(out) <= output < len(out):
                raise TypeError(f"output={output}: the candidate returned {len(out)} outputs")
            out = out[output]
        shape = getattr(out, "shape", None)
        if shape is not None and tuple(shape) == (1,) and scalar():
            note("the candidate returns its value with shape (1,); it is compared as the "
                 "scalar the reference returns")
            out = out[0]
        return out

    call.__wrapped_candidate__ = candidate
    return call
