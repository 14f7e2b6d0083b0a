"""The public API's docstrings in numpydoc form (numpydoc.validate, as nilearn and scikit-learn check).

The public API: every function and class named in a module's ``__all__``
under ``src/rsnflow`` and their public methods. Checked: a docstring exists
(GL08), every parameter is documented and nothing else is (PR01, PR02), a
function that returns something has a Returns section (RT01); a dataclass
documents its fields under Parameters or Attributes; an estimator lists its
fitted attributes under Attributes.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Iterator

import pytest
from numpydoc.docscrape import ClassDoc
from numpydoc.validate import validate
from sklearn.base import BaseEstimator

import rsnflow

CODES = {"GL08", "PR01", "PR02", "RT01"}


def _public() -> Iterator[tuple[str, object]]:
    """``(dotted name, object)`` of every public function, class and public method, once each."""
    seen: set[str] = set()
    for info in pkgutil.walk_packages(rsnflow.__path__, "rsnflow."):
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != info.name:
                continue  # constants, and names re-exported from where they are defined
            qualname = f"{info.name}.{name}"
            if qualname in seen:
                continue
            seen.add(qualname)
            yield qualname, obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and (
                        inspect.isfunction(member) or isinstance(member, classmethod | staticmethod)
                    ):
                        yield f"{qualname}.{attr}", member


PUBLIC = dict(_public())


def test_the_public_api_is_found() -> None:
    assert {"rsnflow.ica.estimator.GroupICA", "rsnflow.config.load_config"} <= set(PUBLIC)
    assert len(PUBLIC) > 200


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_numpydoc(name: str) -> None:
    obj = PUBLIC[name]
    errors = [(code, msg) for code, msg in validate(name)["errors"] if code in CODES]
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        # A dataclass's __init__ parameters are its fields: Parameters or Attributes may list them.
        doc = ClassDoc(obj)
        listed = {p.name for p in doc["Parameters"]} | {p.name for p in doc["Attributes"]}
        missing = {f.name for f in dataclasses.fields(obj) if f.init} - listed
        errors = [(c, m) for c, m in errors if c not in ("PR01", "PR02")]
        if missing:
            errors.append(("PR01", f"fields {sorted(missing)} not documented"))
    if inspect.isclass(obj) and issubclass(obj, BaseEstimator) and not ClassDoc(obj)["Attributes"]:
        errors.append(("AT01", "an estimator lists its fitted attributes under Attributes"))
    assert not errors, "\n".join(f"{name}: {code} {msg}" for code, msg in errors)
