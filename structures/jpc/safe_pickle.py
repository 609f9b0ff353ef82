"""A restricted unpickler for ``.jpc`` files, and the one pickle ``save_jpc`` writes by hand.

A ``.jpc`` is a pickle, and a pickle can name any importable callable. :class:`JpcUnpickler`
resolves only the globals the format holds, and never the real objects behind most of them:

* numpy array reconstruction (``_reconstruct``, ``ndarray``, ``dtype``, ``_frombuffer``,
  ``scalar``, under both the numpy 2.x ``numpy._core`` and the numpy 1.x ``numpy.core`` spelling)
  maps to small local builders that accept plain numeric dtypes only and check every shape
  against the bytes actually present, so numpy never sees attacker-chosen state;
* pyjuice's distribution classes map to inert stand-ins that only record their pickled state
  (pyjuice is never imported).

Any other global is refused with :class:`JpcError` naming it. The nested ``dist`` pickles go
through the same unpickler.

It runs on the pure-Python unpickler: the C one allocates by the pickle's sizes before reading
any data (a 9-byte ``LONG_BINPUT 2**31`` zero-fills a 16 GiB memo, ``BINBYTES8 2**40`` reserves a
terabyte); the Python one keeps its memo in a dict and reads what is there (its one preallocating
opcode, ``BYTEARRAY8``, is replaced). On ``.jpc`` files, mostly array payloads, it is as fast.
"""
from __future__ import annotations

import io
import pickle
import struct

import numpy as np

from ..limits import brief


class JpcError(ValueError):
    """A ``.jpc`` file is malformed, unsafe or uses something this reader does not support."""


#: Largest number of elements of one array in a ``.jpc`` (the bytes must be in the file anyway).
MAX_ARRAY_ELEMENTS = 1 << 31

_DTYPE_CODES = frozenset({"b1", "?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"})


class _DtypeSpec:
    """Stands in for ``numpy.dtype(code)``; the pickled ``BUILD`` state only sets the byte order."""

    def __init__(self, code: str):
        self.code = code
        self.byteorder = "="

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) < 5:
            raise JpcError("dtype state is not a tuple of the expected form")
        byteorder, subarray, names, fields = state[1], state[2], state[3], state[4]
        if byteorder not in ("<", ">", "|", "="):
            raise JpcError("dtype state has an invalid byte order")
        if subarray is not None or names is not None or fields is not None:
            raise JpcError("structured or sub-array dtypes are not allowed in a .jpc")
        self.byteorder = byteorder

    def to_numpy(self) -> np.dtype:
        dtype = np.dtype(self.code)
        return dtype.newbyteorder(self.byteorder) if self.byteorder in "<>" else dtype


def _make_dtype(obj, align=False, copy=True):
    if not isinstance(obj, str) or obj not in _DTYPE_CODES:
        raise JpcError(f"dtype {brief(obj)} is not allowed in a .jpc (plain bool/int/float dtypes only)")
    return _DtypeSpec(obj)


class _Frozen(type):
    """Metaclass of every class a pickle can reach: a pickle's ``BUILD`` may not modify them."""

    def __setattr__(cls, key, value):
        raise JpcError("a .jpc pickle may not modify classes")

    def __delattr__(cls, key):
        raise JpcError("a .jpc pickle may not modify classes")


class _SafeCallable:
    """Wraps one of this module's functions for the unpickler; it cannot be modified by ``BUILD``."""

    __slots__ = ("_fn",)

    def __init__(self, fn):
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args):
        return self._fn(*args)

    def __setattr__(self, key, value):
        raise JpcError("a .jpc pickle may not modify functions")

    def __delattr__(self, key):
        raise JpcError("a .jpc pickle may not modify functions")

    def __setstate__(self, state):
        raise JpcError("a .jpc pickle may not modify functions")


class _NdarrayToken(metaclass=_Frozen):
    """What the global ``numpy.ndarray`` resolves to: only a marker for ``_reconstruct``."""


def _check_shape(shape) -> int:
    if not isinstance(shape, tuple) or len(shape) > 8:
        raise JpcError("array shape must be a tuple of at most 8 ints")
    count = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise JpcError("array shape must hold non-negative ints")
        count *= dim
        # each dim too: with a zero dim the count stays 0 however large the others
        if count > MAX_ARRAY_ELEMENTS or dim > MAX_ARRAY_ELEMENTS:
            raise JpcError(f"array of shape {brief(shape)} is absurdly large")
    return count


def _array_from_bytes(raw, spec, shape, fortran: bool) -> np.ndarray:
    if not isinstance(spec, _DtypeSpec):
        raise JpcError("array dtype is not a numpy dtype")
    if not isinstance(raw, (bytes, bytearray)):
        raise JpcError("array data must be bytes (object arrays are not allowed)")
    count = _check_shape(shape)
    dtype = spec.to_numpy()
    if len(raw) != count * dtype.itemsize:
        raise JpcError(f"array data has {len(raw)} bytes, shape {shape} of {dtype} needs {count * dtype.itemsize}")
    flat = np.frombuffer(bytes(raw), dtype=dtype)
    return flat.reshape(shape, order="F" if fortran else "C").astype(dtype.newbyteorder("="), order="C")


class _ArrayState:
    """Stands in for the empty array ``_reconstruct`` makes; ``BUILD`` fills it with checked data."""

    def __init__(self):
        self.array: np.ndarray | None = None

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise JpcError("array state is not a tuple of the expected form")
        if len(state) == 5:
            if state[0] != 1:
                raise JpcError("unsupported array pickle version")
            state = state[1:]
        shape, spec, fortran, raw = state
        if type(fortran) is not bool:
            raise JpcError("array order flag must be a bool")
        self.array = _array_from_bytes(raw, spec, shape, fortran)


def _reconstruct(subtype, shape, dtype_code):
    if subtype is not _NdarrayToken:
        raise JpcError("numpy _reconstruct may only rebuild plain numpy.ndarray objects")
    return _ArrayState()


def _frombuffer(buf, spec, shape, order):
    if order not in ("C", "F"):
        raise JpcError("array order must be 'C' or 'F'")
    return _array_from_bytes(buf, spec, shape, order == "F")


def _scalar(spec, data):
    if not isinstance(spec, _DtypeSpec) or not isinstance(data, (bytes, bytearray)):
        raise JpcError("numpy scalar must be (dtype, bytes)")
    return _array_from_bytes(data, spec, (), False).item()


class PyjuiceDistribution(metaclass=_Frozen):
    """Inert stand-in for a pickled pyjuice distribution: records its class path and state."""

    pyjuice_module = ""
    pyjuice_name = ""
    state = None

    def __init__(self):
        self.state = {}

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]
        if not isinstance(state, dict):
            raise JpcError(f"state of distribution {self.pyjuice_name} is not a dict")
        self.state = state

    @property
    def class_path(self) -> str:
        return f"{self.pyjuice_module}.{self.pyjuice_name}"


_DIST_MODULE = "pyjuice.nodes.distributions"
_KNOWN_DISTRIBUTIONS = {
    "categorical": ["Categorical"], "bernoulli": ["Bernoulli"], "gaussian": ["Gaussian"],
    "discrete_logistic": ["DiscreteLogistic"], "literal": ["Literal"], "indicator": ["Indicator"],
    "masked_categorical": ["MaskedCategorical"], "external": ["External"],
    "external_categorical": ["ExternProductCategorical"], "softevi_categorical": ["SoftEvidenceCategorical"],
    "softevi_indicator": ["SoftEvidenceIndicator"], "latent_softevi": ["LatentSoftEvidence"],
    "distributions": ["Distribution"],
}
DISTRIBUTION_STAND_INS: dict[tuple[str, str], type] = {}
for _module, _names in _KNOWN_DISTRIBUTIONS.items():
    for _name in _names:
        DISTRIBUTION_STAND_INS[(f"{_DIST_MODULE}.{_module}", _name)] = _Frozen(
            _name, (PyjuiceDistribution,),
            {"pyjuice_module": f"{_DIST_MODULE}.{_module}", "pyjuice_name": _name, "__module__": __name__})

CATEGORICAL_MODULE = f"{_DIST_MODULE}.categorical"

_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {}
for _core in ("numpy._core", "numpy.core"):
    _ALLOWED_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _SafeCallable(_reconstruct)
    _ALLOWED_GLOBALS[(f"{_core}.multiarray", "scalar")] = _SafeCallable(_scalar)
    _ALLOWED_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _SafeCallable(_frombuffer)
_ALLOWED_GLOBALS[("numpy", "ndarray")] = _NdarrayToken
_ALLOWED_GLOBALS[("numpy", "dtype")] = _SafeCallable(_make_dtype)
_ALLOWED_GLOBALS.update(DISTRIBUTION_STAND_INS)


def _load_bytearray8(unpickler) -> None:
    """``BYTEARRAY8`` that reads before it allocates (the stock one zero-fills the declared size)."""
    (size,) = struct.unpack("<Q", unpickler.read(8))
    data = unpickler.read(size)
    if len(data) != size:
        raise pickle.UnpicklingError("pickle data was truncated")
    unpickler.append(bytearray(data))


def _refuse_extension(unpickler) -> None:
    raise JpcError("extension codes (copyreg) are not allowed in a .jpc pickle")


class JpcUnpickler(pickle._Unpickler):  # the pure-Python unpickler: see the module doc for why
    """An unpickler that resolves only the globals a ``.jpc`` holds (see the module doc)."""

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8
    for _opcode in (pickle.EXT1, pickle.EXT2, pickle.EXT4):  # they bypass find_class through copyreg's cache
        dispatch[_opcode[0]] = _refuse_extension

    def __init__(self, file):
        super().__init__(file)
        self.distributions_seen: list[str] = []

    def find_class(self, module: str, name: str):
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise JpcError(f"forbidden global '{module}.{name}' in .jpc pickle (refusing to load it)")
        if isinstance(target, type) and issubclass(target, PyjuiceDistribution):
            self.distributions_seen.append(name)
        return target

    def persistent_load(self, pid):
        raise JpcError("persistent ids are not allowed in a .jpc pickle")


def restricted_loads(data: bytes, what: str):
    """Unpickle ``data`` with :class:`JpcUnpickler`; every failure is a :class:`JpcError`."""
    unpickler = JpcUnpickler(io.BytesIO(data))
    try:
        return unpickler.load()
    except JpcError as err:
        unsupported = [n for n in unpickler.distributions_seen if n != "Categorical"]
        if unsupported:
            raise JpcError(f"{what}: unsupported distribution {unsupported[0]} "
                           f"(only Categorical inputs can be loaded; {err})") from err
        raise JpcError(f"{what}: {err}") from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, LookupError,
            MemoryError, OverflowError, RecursionError, struct.error) as err:
        text = _error_text(err)
        short = isinstance(err, (EOFError, struct.error)) or "truncated" in text or "exhausted" in text
        kind = "truncated" if short else "not a valid pickle"
        raise JpcError(f"{what}: {kind} ({type(err).__name__}: {text})") from err


def _error_text(err: BaseException) -> str:
    """The message of an error raised while unpickling, bounded: its arguments may be objects of
    the file (a key nested 100,000 deep, a huge string), never formatted in full."""
    if isinstance(err, UnicodeDecodeError):
        return f"cannot decode text: {err.reason}"
    if not err.args:
        return ""
    if len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0][:200]
    return brief(err.args, 200)
