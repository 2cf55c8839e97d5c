"""A restricted unpickler for foreign checkpoints (fairseq ``dinosr.ckpt``) that never runs their code.

``torch.load(path, pickle_module=safe_pickle, weights_only=False)`` makes torch build its unpickler on
top of :class:`Unpickler` below, so *our* ``find_class`` decides what every global in the file becomes:

* tensor rebuild functions, storages, dtypes, ``collections.OrderedDict`` and a few plain builtins are
  resolved to the real objects (they only build data);
* globals that can run code (``os.system``, ``builtins.eval``, ``subprocess.*``, ...) are refused with
  :class:`UnsafeCheckpointError`;
* anything else (omegaconf ``DictConfig``, ``argparse.Namespace``, fairseq dataclasses, numpy scalars)
  becomes an inert :class:`PickleStub` subclass that only records its constructor arguments and state.

Calling a stub, building it or setting its state executes no code from the file, so neither fairseq nor
omegaconf is needed to read the weights, and a malicious pickle cannot do anything beyond failing.
"""

from __future__ import annotations

import _compat_pickle
import collections
import os
import pickle
from typing import Any

import torch

from dinosr.errors import UnsafeCheckpointError

__all__ = ["PickleStub", "Unpickler", "UnsafeCheckpointError", "load", "safe_torch_load"]


class PickleStub:
    """Inert stand-in for a class the unpickler will not import.

    Attributes: ``_args`` (constructor/reduce arguments), ``_kwargs``, ``_state`` (what BUILD passed),
    ``_items`` (list appends), ``_dict`` (item assignments). Subclasses carry ``_module``/``_name``.
    """

    _module = "?"
    _name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> PickleStub:
        obj = object.__new__(cls)
        obj.__dict__.update(_args=args, _kwargs=kwargs, _state=None, _items=[], _dict={})
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # REDUCE calls cls(*args): record only
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def append(self, item: Any) -> None:
        self._items.append(item)

    def extend(self, items: Any) -> None:
        self._items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._dict[key] = value

    def __repr__(self) -> str:
        return f"<stub {self._module}.{self._name}>"


_stub_classes: dict[tuple[str, str], type] = {}


def _stub_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _stub_classes:
        _stub_classes[key] = type(f"Stub_{name}", (PickleStub,), {"_module": module, "_name": name})
    return _stub_classes[key]


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """Protocol 0/1 object construction (``copyreg._reconstructor``), allowed for stub classes only."""
    if isinstance(cls, type) and issubclass(cls, PickleStub):
        return cls(state)
    raise UnsafeCheckpointError(f"refusing copyreg._reconstructor for {cls!r}")


# Globals resolved to the real object: they only rebuild tensors and plain containers.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("_codecs", "encode"): __import__("codecs").encode,  # bytes in protocol-2 pickles
}
for _n in ("set", "frozenset", "list", "dict", "tuple", "int", "float", "complex", "bool", "str", "bytes",
           "bytearray", "slice", "object"):  # fmt: skip
    _ALLOWED[("builtins", _n)] = getattr(__import__("builtins"), _n)
for _n in dir(torch):  # dtypes (torch.float16, ...) and the typed storage classes
    _obj = getattr(torch, _n, None)
    if isinstance(_obj, torch.dtype) or (_n.endswith("Storage") and isinstance(_obj, type)):
        _ALLOWED[("torch", _n)] = _obj

# Modules whose globals are refused outright: they can execute code, touch the system or load more pickles.
_DENIED_MODULES = {
    "builtins", "__builtin__", "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "shutil",
    "socket", "importlib", "runpy", "code", "codeop", "ctypes", "pickle", "_pickle", "marshal", "types",
    "functools", "operator", "io", "_io", "pty", "multiprocessing", "asyncio", "webbrowser", "platform",
    "signal", "tempfile", "torch", "numpy.lib", "pydoc", "timeit", "pdb", "bdb", "inspect", "threading",
    "_thread", "copyreg", "codecs", "_codecs", "glob", "zipimport", "urllib", "http", "ftplib", "smtplib",
}  # fmt: skip


def _denied(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in _DENIED_MODULES)


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` allows data builders, refuses code, stubs the rest."""

    def find_class(self, module: str, name: str) -> Any:
        # Protocol < 3 pickles use Python 2 names (torch.save writes protocol 2: subprocess.check_output
        # is stored as commands.check_output); map them like pickle does *before* deciding. The Python 2
        # names are not Python 3 modules, so mapping regardless of the protocol is safe.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if _denied(module):
            raise UnsafeCheckpointError(
                f"refusing to load global {module}.{name}: the checkpoint tries to run code or import "
                "something that is not plain data; this file is not a safe checkpoint"
            )
        return _stub_class(module, name)


def load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` with :class:`Unpickler` (torch's legacy format calls ``pickle_module.load``)."""
    return Unpickler(file, **kwargs).load()


def safe_torch_load(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Any:
    """Read a ``torch.save`` file with the restricted unpickler (see the module docstring).

    Raises:
        UnsafeCheckpointError: the file references a global that could execute code.
    """
    import sys

    module = sys.modules[__name__]
    # weights_only=False is required to pass a pickle_module; our Unpickler is still what resolves
    # every global, so no code from the file runs.
    return torch.load(path, map_location=map_location, pickle_module=module, weights_only=False)
