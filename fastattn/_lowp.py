"""Weights in fewer bytes for the linear products: `compute_type` as CTranslate2 names it.

  "float32"        the weights as they are (the default).
  "int8"           each weight row (output channel) n stored as int8 q[n] with one float32 scale
                   s[n] = max|w[n]| / 127, q = rint(w / s) (an all-zero row: s = 0, q = 0); the
                   activations are quantized per row at run time and the products summed in int32
                   (fastattn/reference/linear_lowp.py has the arithmetic). Everything outside the
                   linear products stays float32 (CTranslate2's int8_float32).
  "bfloat16"       the weights rounded to bfloat16 (to nearest, ties to even; kept as uint16), the
                   products on bfloat16 inputs summed in float32.
  "int8_bfloat16"  int8 for the linear layers, bfloat16 for the weights that int8 would hurt most
                   and that are also read as embeddings (GPT's token table, tied to its LM head).
  "auto"           int8 where this CPU runs it (AVX2, or VNNI on oneDNN), else bfloat16, else
                   float32 (CTranslate2's choice: on AVX2 without VNNI, int8 halves a decode step's
                   time but runs an encoder at about float32's speed).

Int8Weight and BFloat16Weight take the place of a Parameter's array (.data): fastattn.functional's
linear takes them as its weight, and indexing one (w[ids]) gives float32 rows, as the embedding
lookups need. The compiled kernels run on oneDNN (fastattn/_compiled/_gemm_engine.py), int8 on
fastattn's own AVX2 kernels where oneDNN has no VNNI (src_cython/linear_int8.pyx); a type the CPU
cannot run raises ValueError naming what it lacks (check_compute_type), never a slow fallback.
"""
import numpy as np

from fastattn import _backend
from fastattn.reference.linear_lowp import bfloat16_bits, bfloat16_values

COMPUTE_TYPES = ("float32", "int8", "bfloat16", "int8_bfloat16", "auto")


class _Packable:
    """What Int8Weight and BFloat16Weight share: where their plain (N, K) values (int8 q, bfloat16
    bits) are. First in a plain array; after the first product on the compiled backend only in the
    packed form that the kernels read (src_cython/linear_lowp.pyx's _Packed: oneDNN's own layout;
    the weight is never written in place, so it cannot go stale), the plain array dropped: q / bits,
    row lookups and saving read the packed form then. A row view (_rows, e.g. BERT's q, k, v blocks
    of one fused weight) holds no values: it reads its parent's rows, and packs its own on its first
    product."""

    __slots__ = ("_plain", "_shape", "_packed", "_views", "_of")

    def _init(self, plain):
        self._plain, self._shape, self._packed, self._views, self._of = plain, plain.shape, None, None, None

    shape = property(lambda self: self._shape)
    ndim = property(lambda self: 2)
    size = property(lambda self: self._shape[0] * self._shape[1])
    dtype = property(lambda self: np.dtype(np.float32))  # (what a product with it returns)

    def _take(self, rows):
        """The plain values of rows `rows` (an index of axis 0; slice(None): all, a view when held)."""
        plain = self._plain  # (read before _packed: _packed_for sets _packed, then drops _plain)
        if plain is not None:
            return plain[rows]
        packed = self._packed
        if packed is not None:
            return packed.take(np.arange(self._shape[0])[rows])
        parent, start = self._of
        stop = start + self._shape[0]
        return parent._take(slice(start, stop) if isinstance(rows, slice) and rows == slice(None) else np.arange(start, stop)[rows])

    def _packed_for(self, pack):
        """The packed form: pack(plain values) on the first call, which drops the plain array."""
        packed = self._packed
        if packed is None:
            packed = self._packed = pack(np.ascontiguousarray(self._take(slice(None))))
            self._plain = None
        return packed

    def _resident_nbytes(self):
        """The bytes this weight holds itself: its plain or packed values (a view's are its
        parent's) and, for int8, its scales."""
        plain, packed = self._plain, self._packed
        return ((plain.nbytes if plain is not None else 0) + (packed.nbytes if packed is not None else 0)
                + (self.scale.nbytes if isinstance(self, Int8Weight) and self._of is None else 0))

    def _rows(self, start, stop):
        """Rows start:stop as a weight of their own (a view: see the class docstring); the same
        object for the same rows (so that it is packed once), self for all of them."""
        start, stop, _ = slice(start, stop).indices(self._shape[0])
        if (start, stop) == (0, self._shape[0]):
            return self
        views = self._views
        if views is None:
            views = self._views = {}
        view = views.get((start, stop))
        if view is None:
            view = object.__new__(type(self))
            view._plain, view._shape, view._packed, view._views = None, (stop - start, self._shape[1]), None, None
            view._of = (self, start)
            if isinstance(self, Int8Weight):
                view.scale = self.scale[start:stop]
            views[(start, stop)] = view
        return view

    def dequantize(self):
        return self[:]

    def __repr__(self):
        return f"{type(self).__name__}(shape={self.shape})"


class Int8Weight(_Packable):
    """An (N, K) weight as int8 rows q (N, K) and their float32 scales (N,): w ~ q * scale[:, None].
    nbytes: the bytes of q and the scales (as in a quantized file); the packed form pads K and N to
    whole blocks of 64."""

    __slots__ = ("scale",)
    compute_type = "int8"

    def __init__(self, q, scale):
        q, scale = np.asarray(q), np.asarray(scale)
        if q.dtype != np.int8 or q.ndim != 2:
            raise TypeError(f"Int8Weight: q must be a 2-D int8 array, got {q.dtype} {q.shape}")
        if scale.dtype != np.float32 or scale.shape != q.shape[:1]:
            raise TypeError(f"Int8Weight: scale must be float32 of shape {q.shape[:1]}, got {scale.dtype} {scale.shape}")
        if not np.all(np.isfinite(scale)) or np.any(scale < 0):
            raise ValueError("Int8Weight: the scales must be finite and >= 0")
        self._init(q)
        self.scale = scale

    q = property(lambda self: self._take(slice(None)))  # (N, K) int8
    nbytes = property(lambda self: self.size + self.scale.nbytes)

    def __getitem__(self, rows):
        """Float32 rows, as indexing the float weight would give (embedding lookups)."""
        return self._take(rows).astype(np.float32) * self.scale[rows][..., None]

    def copy(self):
        return Int8Weight(self.q.copy(), self.scale.copy())


class BFloat16Weight(_Packable):
    """An (N, K) weight as bfloat16 bits (uint16)."""

    __slots__ = ()
    compute_type = "bfloat16"

    def __init__(self, bits):
        bits = np.asarray(bits)
        if bits.dtype != np.uint16 or bits.ndim != 2:
            raise TypeError(f"BFloat16Weight: bits must be a 2-D uint16 array, got {bits.dtype} {bits.shape}")
        self._init(bits)

    bits = property(lambda self: self._take(slice(None)))  # (N, K) uint16
    nbytes = property(lambda self: 2 * self.size)

    def __getitem__(self, rows):
        return bfloat16_values(self._take(rows))

    def copy(self):
        return BFloat16Weight(self.bits.copy())


LOW_PRECISION = (Int8Weight, BFloat16Weight)


def quantize_int8(w):
    """w (N, K) float -> Int8Weight: per row s = float32(max|w| / 127), q = clip(rint(w / s))
    (the division in float64, so that |w - s q| <= s / 2 exactly); a row whose s is 0 gets q = 0."""
    w = np.asarray(w)
    if w.ndim != 2 or w.dtype not in (np.float32, np.float64):
        raise TypeError(f"quantize_int8: w must be a 2-D float array, got {w.dtype} {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("quantize_int8: the weight holds NaN or inf")
    amax = np.max(np.abs(w), axis=1, initial=0).astype(np.float64)
    scale = (amax / 127).astype(np.float32)
    q = np.zeros(w.shape, np.int8)
    for start in range(0, w.shape[0], 4096):  # (in row blocks: no float64 copy of a whole table)
        s = scale[start:start + 4096].astype(np.float64)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            block = np.where(s > 0, np.rint(w[start:start + 4096] / s), 0)
        q[start:start + 4096] = np.clip(block, -127, 127)
    return Int8Weight(q, scale)


def to_bfloat16(w):
    """w (N, K) float -> BFloat16Weight (each element to the nearest bfloat16)."""
    w = np.asarray(w)
    if w.ndim != 2 or w.dtype not in (np.float32, np.float64):
        raise TypeError(f"to_bfloat16: w must be a 2-D float array, got {w.dtype} {w.shape}")
    return BFloat16Weight(bfloat16_bits(w.astype(np.float32, copy=False)))


def stack_rows(weights):
    """One weight of the rows of `weights` (all Int8Weight or all BFloat16Weight), in order."""
    if all(isinstance(w, Int8Weight) for w in weights):
        return Int8Weight(np.concatenate([w.q for w in weights]), np.concatenate([w.scale for w in weights]))
    if all(isinstance(w, BFloat16Weight) for w in weights):
        return BFloat16Weight(np.concatenate([w.bits for w in weights]))
    raise TypeError("stack_rows: the weights must all be int8 or all bfloat16")


def _cpu_lacks(compute_type):
    """What the compiled backend lacks to run `compute_type` here ("" when nothing)."""
    from importlib import import_module

    from fastattn._compiled import _gemm_engine

    if compute_type == "int8":  # (oneDNN's VNNI kernels, else fastattn's own on AVX2)
        if import_module("fastattn._compiled.linear").int8_engine() is not None:
            return ""
        return (f"AVX2 (fastattn's int8 kernels) or AVX512-VNNI / AVX-VNNI on the oneDNN engine (oneDNN's "
                f"instruction set here: {_gemm_engine.onednn_isa() or 'oneDNN not loaded'})")
    if _gemm_engine.ENGINE != "onednn":
        why = _gemm_engine.unavailable_reason() or "FASTATTN_GEMM=openblas chose the BLAS"
        return f"the oneDNN engine, which the {compute_type} products run on ({why})"
    try:
        from fastattn._compiled import linear_lowp  # noqa: F401 (built with oneDNN's headers)
    except ImportError as exc:
        return f"the compiled module fastattn._compiled.linear_lowp ({exc})"
    isa = _gemm_engine.onednn_isa() or "?"
    bits = int(_gemm_engine._lib.dnnl_get_effective_cpu_isa())
    if compute_type == "bfloat16" and not bits & 0x80:  # avx512_core_bf16, amx
        return f"AVX512-BF16 or AMX-BF16 (oneDNN's instruction set here is {isa})"
    return ""


def check_compute_type(compute_type, backend=None):
    """The compute type to use for `compute_type` ("auto" resolved) on `backend` (default: the
    current one): ValueError for an unknown name or a type this CPU / build cannot run."""
    if not isinstance(compute_type, str) or compute_type not in COMPUTE_TYPES:
        raise ValueError(f"compute_type must be one of {COMPUTE_TYPES}, got {compute_type!r}")
    backend = backend or _backend.get_backend()
    if compute_type == "auto":
        if backend == "reference":
            return "int8"
        return "int8" if not _cpu_lacks("int8") else ("bfloat16" if not _cpu_lacks("bfloat16") else "float32")
    if compute_type == "float32" or backend == "reference":
        return compute_type
    for part in ("int8", "bfloat16"):
        if part in compute_type:
            lacks = _cpu_lacks(part)
            if lacks:
                raise ValueError(f"compute_type={compute_type!r} needs {lacks}; float32 runs everywhere")
    return compute_type


def quantize(w, compute_type):
    """w (N, K) as the weight object of compute_type "int8" or "bfloat16" ("float32": w itself)."""
    if compute_type == "int8":
        return quantize_int8(w)
    if compute_type == "bfloat16":
        return to_bfloat16(w)
    if compute_type == "float32":
        return w
    raise ValueError(f"quantize: compute_type must be 'float32', 'int8' or 'bfloat16', got {compute_type!r}")
