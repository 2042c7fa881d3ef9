"""Plain data from what `torch_checkpoint.load_torch_checkpoint` returned: its placeholders for omegaconf configs,
argparse namespaces, dataclasses, enums and numpy objects become dicts, lists, values and numpy objects rebuilt from
validated parts (nothing from the file runs), and fairseq's `${a.b}` interpolations are resolved."""

import math
import re

import numpy as np

from wav2vec_jax.interop.torch_checkpoint import Placeholder, TorchType


def to_plain(obj, resolve=True):
  """Replaces known placeholders by plain data, recursively; tensors and unknown placeholders stay as they are.

  omegaconf DictConfig / ListConfig -> dict / list of their `_content` (a `None`, `'???'` or interpolation
  content as is); omegaconf value nodes -> their `_val`; numpy arrays, scalars and dtypes -> numpy objects, rebuilt
  from validated parts; objects pickled with a dict state (argparse.Namespace, dataclasses) -> that dict; enums
  (one constructor argument, no state) -> their value; dict subclasses -> dict; lists and tuples keep their type.

  Args:
    obj: anything `load_torch_checkpoint` returned.
    resolve: in omegaconf configs, replace strings that are one absolute interpolation (`'${task.normalize}'`,
      as fairseq's `II(...)` fields are saved) by the value they point to in that config, where it exists.
  """
  memo, roots = {}, []
  out = _plain(obj, memo, roots)
  for root in roots if resolve else ():
    _resolve(root, root, set())
  return out


def _plain(obj, memo, roots):
  if id(obj) in memo:
    return memo[id(obj)][1]
  key, is_root = obj, False  # memo holds `key` so that its id is not reused while we run.
  if isinstance(obj, TorchType) and not obj.storage:
    return obj.dtype
  if isinstance(obj, Placeholder):
    if obj.module in _NUMPY_MODULES and (value := _numpy(obj, memo, roots)) is not None:  # Before generic rules.
      memo[id(obj)] = (obj, value)
      return value
    state, omegaconf = obj.state, obj.module.split(".")[0] == "omegaconf"
    if omegaconf and isinstance(state, dict) and "_content" in state:  # DictConfig, ListConfig
      if not isinstance(content := state["_content"], (dict, list)):
        return content
      obj, is_root = content, state.get("_parent") is None
    elif omegaconf and isinstance(state, dict) and "_val" in state:  # AnyNode, StringNode, IntegerNode, ...
      return _plain(state["_val"], memo, roots)
    elif isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
      obj = {**(state[0] or {}), **(state[1] or {})}  # (__dict__, __slots__) state
    elif isinstance(state, dict):
      obj = state
    elif state is None and len(obj.args) == 1 and not (obj.kwargs or obj.items or obj.dictitems):
      return _plain(obj.args[0], memo, roots)
    else:
      return obj
  if isinstance(obj, (dict, list)):
    out = {} if isinstance(obj, dict) else []
    memo[id(key)] = (key, out)  # Before recursing: a config's parent links lead back here.
    if isinstance(obj, dict):
      out.update((k, _plain(v, memo, roots)) for k, v in obj.items())
    else:
      out.extend(_plain(v, memo, roots) for v in obj)
    if is_root:
      roots.append(out)
    return out
  return tuple(_plain(v, memo, roots) for v in obj) if isinstance(obj, tuple) else obj


_NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                  "numpy._core.numeric")


def _numpy(p, memo, roots):
  """A numpy dtype, array or scalar from the placeholders its pickle made; None if unsupported or malformed."""
  try:
    if p.name == "dtype":  # np.dtype("f8", False, True), then BUILD (version, byte order, subarray, names, ...)
      spec, state = p.args[0] if p.args else None, p.state if isinstance(p.state, tuple) else ()
      if not (isinstance(spec, str) and re.fullmatch(r"[biufcOSU]\d+", spec)) or any(state[2:4]):
        return None  # Structured, subarray, datetime and void dtypes are not rebuilt.
      return np.dtype(spec).newbyteorder(state[1] if len(state) > 1 and state[1] in ("<", ">") else "=")
    if p.name == "scalar" and len(p.args) == 2:  # scalar(dtype, bytes or the object)
      dtype, data = _plain(p.args[0], memo, roots), p.args[1]
      if isinstance(dtype, np.dtype) and dtype.hasobject:
        return _plain(data, memo, roots)
      if isinstance(dtype, np.dtype) and isinstance(data, bytes) and len(data) == dtype.itemsize:
        return np.frombuffer(data, dtype)[0]
    elif p.name == "_reconstruct" and isinstance(p.state, tuple) and len(p.state) == 5:  # then BUILD(state)
      _, shape, dtype, fortran, data = p.state
      return _numpy_array(data, _plain(dtype, memo, roots), shape, "F" if fortran else "C", memo, roots)
    elif p.name == "_frombuffer" and len(p.args) == 4:  # protocol 5: _frombuffer(buffer, dtype, shape, order)
      data, dtype, shape, order = p.args
      return _numpy_array(data, _plain(dtype, memo, roots), shape, order, memo, roots)
  except (TypeError, ValueError):
    pass
  return None


def _numpy_array(data, dtype, shape, order, memo, roots):
  shape = tuple(int(n) for n in shape)
  if not isinstance(dtype, np.dtype) or order not in ("C", "F") or min(shape, default=0) < 0:
    return None
  if dtype.hasobject and isinstance(data, list) and len(data) == math.prod(shape):
    out = np.empty(len(data), object)  # Pickled as a list of objects, which we unpickled safely.
    for i, value in enumerate(data):
      out[i] = _plain(value, memo, roots)
  elif not dtype.hasobject and isinstance(data, (bytes, bytearray)) and len(data) == math.prod(shape) * dtype.itemsize:
    out = np.frombuffer(data, dtype).copy()
  else:
    return None
  return out.reshape(shape, order=order)


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][\w\-]*(?:\.[\w\-]+)*)\}")  # absolute `${a.b.c}` only


def _resolve(node, root, visited):
  if id(node) in visited:
    return
  visited.add(id(node))
  for key, value in list(node.items() if isinstance(node, dict) else enumerate(node)):
    for _ in range(10):  # Follows chains of interpolations; a cycle stops here, unresolved.
      match = _INTERPOLATION.fullmatch(value) if isinstance(value, str) else None
      if not match or (target := _lookup(root, match.group(1))) is None:
        break
      value = node[key] = target[0]
    if isinstance(value, (dict, list)):
      _resolve(value, root, visited)


def _lookup(root, dotted):
  node = root
  for part in dotted.split("."):
    if isinstance(node, dict) and part in node:
      node = node[part]
    elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
      node = node[int(part)]
    else:
      return None
  return (node,)
