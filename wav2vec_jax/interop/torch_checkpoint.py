"""Safe, torch-free reader of PyTorch checkpoints (fairseq `.pt`, Hugging Face `pytorch_model.bin`).

Reads both formats `torch.save` writes: the zip archive (torch >= 1.6) and the legacy stream
(`_use_new_zipfile_serialization=False`, e.g. fairseq checkpoints from 2020). Unpickling is restricted: only an
allowlist of harmless globals resolves to real objects (containers, our own tensor rebuilders); every other class or
function the file names (argparse.Namespace, omegaconf.DictConfig, numpy, fairseq enums, os.system) becomes an
inert `Placeholder` that records its arguments and state. `plain_data.to_plain` turns those into plain data.
"""

import _compat_pickle
import collections
import io
import os
import pickle
import re
import reprlib
import struct
import zipfile

import ml_dtypes
import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION
_DTYPES = {  # torch dtype name (pickled as GLOBAL 'torch float16') -> numpy dtype
    "float64": np.float64, "double": np.float64, "float32": np.float32, "float": np.float32,
    "float16": np.float16, "half": np.float16, "bfloat16": ml_dtypes.bfloat16, "complex64": np.complex64,
    "cfloat": np.complex64, "complex128": np.complex128, "cdouble": np.complex128, "int64": np.int64,
    "long": np.int64, "int32": np.int32, "int": np.int32, "int16": np.int16, "short": np.int16,
    "int8": np.int8, "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
    "bool": np.bool_, "float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2,
    "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz, "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
}
_STORAGES = {  # storage class name -> torch dtype name; UntypedStorage holds bytes (tensor_v3 gives the dtype)
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}


class _Frozen:
  """What the unpickler hands out besides containers and placeholders. Pickle's BUILD is refused, so a file cannot
  alter these (nor, through them, a shared numpy dtype or one of our functions)."""
  __slots__ = ()

  def __init__(self, **fields):
    for name, value in fields.items():
      setattr(self, name, value)

  def __setstate__(self, state):
    raise pickle.UnpicklingError(f"refusing to set the state of a {type(self).__name__}")


class TorchType(_Frozen):
  """A torch dtype or storage class the file names; `plain_data.to_plain` turns a dtype into its numpy dtype."""
  __slots__ = ("dtype", "storage")  # `torch.float16` (storage False) or `torch.HalfStorage` (True)


class _Storage(_Frozen):
  __slots__ = ("data", "dtype", "big_endian")  # [nbytes] uint8 read-only; saved element type; byte order


class _Call(_Frozen):
  __slots__ = ("fn",)  # an allowlisted function

  def __call__(self, *args):
    return self.fn(*args)


class Placeholder:
  """Inert stand-in for a global the checkpoint names but we do not trust; never runs code from the file.

  Unpickling makes one subclass per `module.name` (class attributes `module`, `name`). Calling it (pickle's
  REDUCE / NEWOBJ) gives an instance recording `args` and `kwargs`; BUILD stores `state`; contents of list or
  dict subclasses land in `items` and `dictitems` (a list of key-value pairs).
  """
  module = name = "?"

  def __new__(cls, *args, **kwargs):
    self = object.__new__(cls)
    self.args, self.kwargs, self.state, self.items, self.dictitems = args, kwargs, None, [], []
    return self

  def __init__(self, *args, **kwargs):
    del args, kwargs  # Recorded by __new__, which NEWOBJ calls without __init__.

  def __setstate__(self, state):
    self.state = state

  def append(self, item):
    self.items.append(item)

  def extend(self, items):
    self.items.extend(items)

  def __setitem__(self, key, value):
    self.dictitems.append((key, value))

  @reprlib.recursive_repr()
  def __repr__(self):
    return f"Placeholder({self.module}.{self.name}, args={self.args!r}, state={self.state!r})"


def _rebuild_tensor(storage, offset, size, stride, dtype=None):
  """A tensor as a read-only numpy view of its storage (None in the legacy format's scanning pass)."""
  if storage is None:
    return None
  if not isinstance(storage, _Storage) or not (dtype is None or isinstance(dtype, TorchType)):
    raise ValueError(f"tensor storage {storage!r} or dtype {dtype!r} is not what torch writes")
  dtype = storage.dtype if dtype is None else dtype.dtype
  size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
  if len(size) != len(stride) or min(stride, default=0) < 0 or offset < 0:
    raise ValueError(f"bad tensor layout: offset {offset}, size {size}, stride {stride}")
  if storage.data.size % dtype.itemsize:
    raise ValueError(f"storage of {storage.data.size} bytes is not a whole number of {dtype} elements")
  flat = storage.data.view(dtype)
  if 0 in size:
    flat, offset = flat[:0], 0
  elif offset + sum((n - 1) * s for n, s in zip(size, stride)) >= flat.size:
    raise ValueError(f"tensor of size {size}, stride {stride} at offset {offset} exceeds its storage of "
                     f"{flat.size} {dtype} elements")
  if storage.big_endian:
    flat = flat.byteswap()  # Native copy; numpy swaps complex and ml_dtypes types element-wise correctly.
  out = np.ndarray(size, dtype, flat, offset * dtype.itemsize, tuple(s * dtype.itemsize for s in stride))
  out.flags.writeable = False
  return out


def _encode(text, encoding="utf-8"):
  """_codecs.encode, how protocol 2 pickles bytes; limited to the codecs pickle itself uses."""
  if not (isinstance(text, str) and encoding in ("latin1", "latin-1", "utf-8", "utf8", "ascii")):
    raise ValueError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r})")
  return text.encode(encoding)


# The only globals that resolve to real objects; each is harmless whatever the file passes it. numpy is not here:
# its __setstate__ trusts its input (a pickled dtype may claim to hold object pointers), so numpy values stay
# placeholders until `plain_data.to_plain` rebuilds them from validated parts.
_SAFE = {
    ("collections", "OrderedDict"): collections.OrderedDict, ("collections", "defaultdict"): collections.defaultdict,
    ("torch", "Size"): tuple, ("_codecs", "encode"): _Call(fn=_encode),
    ("torch._utils", "_rebuild_tensor"): _Call(fn=_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Call(fn=lambda storage, offset, size, stride, *_: _rebuild_tensor(
        storage, offset, size, stride)),
    ("torch._utils", "_rebuild_tensor_v3"): _Call(fn=lambda storage, offset, size, stride, grad, hooks, dtype, *_: (
        _rebuild_tensor(storage, offset, size, stride, dtype))),
    ("torch._utils", "_rebuild_parameter"): _Call(fn=lambda data, *_: data),
    ("torch._utils", "_rebuild_parameter_with_state"): _Call(fn=lambda data, *_: data),
    # `func` came through find_class too, so it is allowlisted or a Placeholder.
    ("torch._tensor", "_rebuild_from_type_v2"): _Call(fn=lambda func, new_type, args, state: func(*args)),
}
_SAFE.update((("builtins", t.__name__), t) for t in (
    dict, list, tuple, set, frozenset, slice, complex, range, bytes, bytearray, str, int, float, bool, object))


class _Unpickler(pickle.Unpickler):
  """Resolves only allowlisted globals; hands `('storage', type, key, location, numel, ...)` ids to a callback."""

  def __init__(self, file, load_storage=None):
    super().__init__(file, encoding="utf-8")  # As torch.load.
    self._load_storage, self._placeholders = load_storage, {}

  def find_class(self, module, name):
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))  # Python 2 names.
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    if module in ("torch", "torch.storage") and name in _STORAGES:
      return TorchType(dtype=np.dtype(_DTYPES[_STORAGES[name]]), storage=True)
    if module == "torch" and name in _DTYPES:
      return TorchType(dtype=np.dtype(_DTYPES[name]), storage=False)
    if (module, name) in _SAFE:
      return _SAFE[module, name]
    if (module, name) not in self._placeholders:
      self._placeholders[module, name] = type(name, (Placeholder,), {
          "module": module, "name": name, "__qualname__": f"Placeholder[{module}.{name}]"})
    return self._placeholders[module, name]

  def persistent_load(self, pid):
    if self._load_storage is None or not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    if not (isinstance(pid[1], TorchType) and pid[1].storage):
      raise ValueError(f"unknown storage type {pid[1]!r}")
    return self._load_storage(pid)


def _read_zip(file):
  """Zip format: `<any folder>/data.pkl`, storages in `<folder>/data/<key>`, optional `<folder>/byteorder`."""
  try:
    archive = zipfile.ZipFile(file)
  except zipfile.BadZipFile as e:
    raise ValueError(f"truncated or corrupt zip archive ({e})") from e
  pickles = [n for n in archive.namelist() if re.fullmatch(r"[^/]+/data\.pkl", n)]
  if not pickles:
    raise ValueError("zip archive has no <folder>/data.pkl record; not a PyTorch checkpoint")
  prefix = pickles[0][:-len("data.pkl")]

  def read(name):
    try:
      info = archive.getinfo(name)
    except KeyError:
      raise ValueError(f"missing record {name!r} in the zip archive") from None
    if info.compress_type != zipfile.ZIP_STORED:
      return archive.read(name)
    # torch stores records uncompressed and may skip their CRCs (zipfile would reject those): read directly.
    file.seek(info.header_offset)
    header = file.read(30)
    if header[:4] != b"PK\x03\x04" or len(header) < 30:
      raise ValueError(f"corrupt local header for record {name!r}")
    file.seek(info.header_offset + 30 + sum(struct.unpack("<HH", header[26:30])))
    data = file.read(info.file_size)
    if len(data) != info.file_size:
      raise ValueError(f"record {name!r} is truncated ({len(data)} of {info.file_size} bytes)")
    return data

  big_endian = prefix + "byteorder" in archive.namelist() and read(prefix + "byteorder").strip() == b"big"
  storages = {}

  def load_storage(pid):
    dtype, key, numel = pid[1].dtype, str(pid[2]), int(pid[4])
    if key not in storages:
      data = np.frombuffer(read(f"{prefix}data/{key}"), np.uint8)
      if data.size < numel * dtype.itemsize:
        raise ValueError(f"storage record {prefix}data/{key} has {data.size} bytes, not {numel} {dtype} elements")
      storages[key] = _Storage(data=data, dtype=dtype, big_endian=big_endian)
    return storages[key]

  return _Unpickler(io.BytesIO(read(pickles[0])), load_storage).load()


def _read_legacy(file):
  """Legacy format: pickled magic, protocol, sys_info, main object, storage keys; then each storage's bytes."""
  try:
    magic = _Unpickler(file).load()
  except Exception as e:  # Arbitrary bytes fail in many ways; all mean the same here.
    raise ValueError(f"neither a zip archive nor a legacy torch.save stream ({type(e).__name__}: {e})") from e
  if magic != _LEGACY_MAGIC:
    raise ValueError("neither a zip archive nor a legacy torch.save stream (no torch magic number)")
  if (protocol := _Unpickler(file).load()) != _LEGACY_PROTOCOL:
    raise ValueError(f"unsupported legacy protocol version {protocol!r}")
  _Unpickler(file).load()  # sys_info; torch writes legacy storages little-endian on any machine.
  main, dtypes, size = file.tell(), {}, os.fstat(file.fileno()).st_size
  # Pass 1 learns each storage's dtype, which says how long it is; pass 2 (below) builds the arrays.
  _Unpickler(file, lambda pid: dtypes.setdefault(str(pid[2]), pid[1].dtype) and None).load()
  roots, views = {}, {}
  for key in map(str, _Unpickler(file).load()):
    if key not in dtypes:
      raise ValueError(f"storage {key!r} is listed but no tensor uses it")
    header, itemsize = file.read(8), dtypes[key].itemsize
    numel = struct.unpack("<q", header)[0] if len(header) == 8 else -1
    if not 0 <= numel * itemsize <= size - file.tell():  # Checked before reading: a corrupt count can be huge.
      raise ValueError(f"storage {key!r} is truncated")
    roots[key] = _Storage(data=np.frombuffer(file.read(numel * itemsize), np.uint8), dtype=dtypes[key],
                          big_endian=False)

  def load_storage(pid):
    if (key := str(pid[2])) not in roots:
      raise ValueError(f"missing storage record {key!r}")
    if len(pid) < 6 or pid[5] is None:
      return roots[key]
    (view_key, offset, numel), root = pid[5], roots[key]  # Storage views, written by torch < 1.0.
    if view_key not in views:
      item = root.dtype.itemsize
      views[view_key] = _Storage(data=root.data[offset * item:(offset + numel) * item], dtype=root.dtype,
                                 big_endian=False)
    return views[view_key]

  file.seek(main)
  return _Unpickler(file, load_storage).load()


def load_torch_checkpoint(path):
  """Reads a `torch.save` file without torch and without running code from it.

  Args:
    path: a zip-format or legacy-format checkpoint, e.g. a fairseq `.pt` or a Hugging Face `pytorch_model.bin`.

  Returns:
    The saved object with tensors and parameters as read-only numpy arrays with the saved dtype (bfloat16 and
    float8 as ml_dtypes types), shape and strides; tensors sharing a storage share memory. Other globals
    (Namespace, omegaconf configs, numpy values, ...) are `Placeholder`s; see `plain_data.to_plain`.

  Raises:
    ValueError: naming `path`, if the file is not a PyTorch checkpoint, is truncated or corrupt, or lacks a
      storage record.
  """
  with open(path, "rb") as file:
    head = file.read(512)
    file.seek(0)
    try:
      if head.startswith(b"PK"):
        return _read_zip(file)
      if head[257:262] == b"ustar":
        raise ValueError("tar-format checkpoints (torch < 0.4) are not supported")
      return _read_legacy(file)
    except MemoryError as e:
      raise ValueError(f"{path}: out of memory while reading (a corrupt length field?)") from e
    except (ValueError, pickle.UnpicklingError, EOFError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, NotImplementedError, OSError, struct.error, zipfile.BadZipFile) as e:
      raise ValueError(f"{path}: {e}") from e
