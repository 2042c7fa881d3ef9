"""Tests for the torch-free checkpoint reader: formats, dtypes, layouts, configs, malicious pickles, errors."""

import argparse
import base64
import collections
import io
import os
import pickle
import struct
import subprocess
import sys
import types
import zipfile
import zlib

import ml_dtypes
import numpy as np
import pytest
import torch

from wav2vec_jax.interop.plain_data import to_plain
from wav2vec_jax.interop.torch_checkpoint import Placeholder, load_torch_checkpoint

FORMATS = ["zip", "legacy"]
# dtypes torch.Tensor.numpy() refuses: read them through a signed integer view of the same width.
_VIA_INT = {torch.bfloat16: (torch.int16, ml_dtypes.bfloat16), torch.uint16: (torch.int16, np.uint16),
            torch.float8_e4m3fn: (torch.int8, ml_dtypes.float8_e4m3fn), torch.uint32: (torch.int32, np.uint32),
            torch.float8_e5m2: (torch.int8, ml_dtypes.float8_e5m2), torch.uint64: (torch.int64, np.uint64)}


def _save(obj, path, fmt, **kwargs):
  torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"), **kwargs)
  return path


def _reference(t):
  t = t.detach()
  if t.dtype in _VIA_INT:
    int_dtype, np_dtype = _VIA_INT[t.dtype]
    return t.contiguous().view(int_dtype).numpy().view(np_dtype)
  return t.numpy()


def _assert_same(got, t):
  want = _reference(t)
  assert isinstance(got, np.ndarray)
  assert got.dtype == want.dtype and got.shape == want.shape
  assert got.strides == tuple(s * t.element_size() for s in t.stride())  # torch's layout, views included.
  assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()  # Exact, NaN-safe.


def _all_dtypes():
  g = torch.Generator().manual_seed(0)
  floats = torch.randn(3, 5, generator=g) * 100
  out = {str(d).replace("torch.", ""): floats.to(d) for d in (
      torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.float8_e4m3fn, torch.float8_e5m2)}
  out["float32_nan_inf"] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
  for d in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
    out[str(d).replace("torch.", "")] = torch.randint(-128 if d != torch.uint8 else 0, 127, (4, 2), dtype=d,
                                                       generator=g)
  out["int64_big"] = torch.tensor([2**62, -2**62 - 5])
  for d in (torch.uint16, torch.uint32, torch.uint64):
    out[str(d).replace("torch.", "")] = torch.tensor([0, 1, 7], dtype=torch.int64).to(torch.int32).to(d)
  out["bool"] = torch.tensor([[True, False], [False, True]])
  out["complex64"] = torch.complex(floats, -floats)
  out["complex128"] = out["complex64"].to(torch.complex128)
  out["scalar"] = torch.tensor(3.5)
  out["empty"] = torch.zeros(0, 3)
  out["empty_half"] = torch.zeros(2, 0, dtype=torch.float16)
  return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_all_dtypes_exact(tmp_path, fmt):
  sd = _all_dtypes()
  got = load_torch_checkpoint(_save(sd, tmp_path / "m.pt", fmt))
  assert list(got) == list(sd)
  for name, t in sd.items():
    _assert_same(got[name], t)
  assert got["bfloat16"].dtype == ml_dtypes.bfloat16 and got["empty"].shape == (0, 3)
  assert not got["float32"].flags.writeable


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_and_non_contiguous(tmp_path, fmt):
  base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
  sd = {"base": base, "t": base.t(), "slice": base[1:5:2, 3::2], "flat_tail": base.view(-1)[37:],
        "expand": torch.arange(3.0).reshape(3, 1).expand(3, 4), "permute": base.reshape(2, 3, 8).permute(2, 0, 1),
        "half_view": torch.arange(10, dtype=torch.float16)[2:7], "param": torch.nn.Parameter(base[2])}
  got = load_torch_checkpoint(_save(sd, tmp_path / "v.pt", fmt))
  for name, t in sd.items():
    _assert_same(got[name], t)
  itemsize = 4
  assert got["t"].strides == (itemsize, 8 * itemsize)
  assert got["expand"].strides == (itemsize, 0)
  assert got["slice"].strides == (16 * itemsize, 2 * itemsize)
  for name in ("t", "slice", "flat_tail", "param"):
    assert np.shares_memory(got[name], got["base"]), name  # One storage, as in torch.


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_containers_and_python_values(tmp_path, fmt):
  obj = {"model": collections.OrderedDict(w=torch.ones(2, 2)), "list": [torch.zeros(1), {"deep": (torch.eye(2), 3)}],
         "bytes": b"\x00\xffab", "set": {1, 2}, "fs": frozenset({"a"}), "complex": 1 + 2j, "slice": slice(1, 5, 2),
         "none": None, "float": 0.25, "big": 2**70, "str": "héllo", "size": torch.Size([2, 3]),
         "np_scalar": np.float64(1.5), "np_int": np.int32(-7), "np_array": np.arange(6, dtype=np.int16).reshape(2, 3),
         "np_obj": np.array([1, "x"], dtype=object), "dtype": np.dtype("float32")}
  got = load_torch_checkpoint(_save(obj, tmp_path / "n.pt", fmt))
  assert isinstance(got["model"], collections.OrderedDict) and "w" in got["model"]
  # numpy values stay inert until to_plain rebuilds them from validated parts.
  assert isinstance(got["np_array"], Placeholder) and isinstance(got["dtype"], Placeholder)
  got = to_plain(got)
  np.testing.assert_array_equal(got["list"][1]["deep"][0], np.eye(2, dtype=np.float32))
  assert got["list"][1]["deep"][1] == 3
  for key in ("bytes", "set", "fs", "complex", "slice", "none", "float", "big", "str", "dtype"):
    assert got[key] == obj[key], key
  assert got["size"] == (2, 3)
  assert got["np_scalar"] == 1.5 and got["np_scalar"].dtype == np.float64
  assert got["np_int"] == -7 and got["np_int"].dtype == np.int32
  np.testing.assert_array_equal(got["np_array"], obj["np_array"])
  assert got["np_array"].dtype == np.int16
  assert list(got["np_obj"]) == [1, "x"]


class _EvilDtype:
  """Pickles as numpy does a dtype, with flags claiming the int64 items are object pointers."""

  def __reduce__(self):
    return np.dtype, ("i8", False, True), (3, "<", None, None, None, -1, -1, 0x1F)


@pytest.mark.parametrize("fmt", FORMATS)
def test_numpy_values_rebuilt_from_validated_parts(tmp_path, fmt):
  obj = {"fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "big": np.arange(4, dtype=">i4"),
         "bool": np.bool_(True), "c": np.complex64(1 - 2j), "u": np.array(["ab", "c"]), "empty": np.zeros((0, 2)),
         "structured": np.zeros(2, dtype=[("a", "i4"), ("b", "f4")]), "evil_dtype": _EvilDtype()}
  got = to_plain(load_torch_checkpoint(_save(obj, tmp_path / "np.pt", fmt)))
  for key in ("fortran", "big", "u", "empty"):
    np.testing.assert_array_equal(got[key], obj[key])
    assert got[key].dtype == obj[key].dtype and got[key].shape == obj[key].shape, key
  assert got["fortran"].flags.f_contiguous
  assert got["bool"] == np.bool_(True) and got["c"] == np.complex64(1 - 2j) and got["c"].dtype == np.complex64
  assert isinstance(got["structured"], Placeholder)  # Not rebuilt: left inert.
  assert got["evil_dtype"] == np.dtype("i8") and not got["evil_dtype"].hasobject
  assert got["evil_dtype"].flags == np.dtype("i8").flags


def test_build_on_allowlisted_objects_is_refused(tmp_path):
  state = b"(K\x03X\x01\x00\x00\x00>NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x1ftb."
  for i, target in enumerate([b"ctorch\nfloat32\n", b"ctorch\nFloatStorage\n", b"ctorch._utils\n_rebuild_tensor_v2\n",
                              b"c_codecs\nencode\n"]):
    path = tmp_path / f"build{i}.pt"
    path.write_bytes(_legacy_stream(b"\x80\x02" + target + state))
    with pytest.raises(ValueError, match="refusing to set the state"):
      load_torch_checkpoint(path)
  assert np.dtype("float32").byteorder == "=" and np.dtype("float32").flags == 0


def test_pickle_protocol_4_and_shared_tensor_identity(tmp_path):
  t = torch.arange(5)
  got = load_torch_checkpoint(_save({"a": t, "b": t}, tmp_path / "p4.pt", "zip", pickle_protocol=4))
  np.testing.assert_array_equal(got["a"], np.arange(5))
  assert np.shares_memory(got["a"], got["b"])


def test_any_top_level_folder_and_big_endian(tmp_path):
  """Rewrites a torch zip under another folder name with big-endian storages, as a big-endian machine would."""
  sd = {"f": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(), "b": torch.tensor([1.5, -2.0]).bfloat16(),
        "c": torch.tensor([1 + 2j]), "i": torch.arange(3, dtype=torch.int16), "u": torch.arange(3, dtype=torch.uint8)}
  src = _save(sd, tmp_path / "src.pt", "zip")
  swap = {"FloatStorage": 4, "BFloat16Storage": 2, "ComplexFloatStorage": 4, "ShortStorage": 2, "ByteStorage": 1}
  with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp_path / "big.bin", "w") as zout:
    item = {}  # storage key -> bytes per swapped unit (complex swaps per float component)

    class Spy(pickle.Unpickler):
      def persistent_load(self, pid):
        item[pid[2]] = swap[pid[1]]

      def find_class(self, module, name):
        return name if module == "torch" else (lambda *a: None)

    Spy(io.BytesIO(zin.read("src/data.pkl"))).load()
    for info in zin.infolist():
      name, data = info.filename.split("/", 1)[1], zin.read(info.filename)
      if name.startswith("data/"):
        data = np.frombuffer(data, f"<u{item[name[5:]]}").astype(f">u{item[name[5:]]}").tobytes()
      zout.writestr(f"weird_name-1/{name}", b"big" if name == "byteorder" else data)
  got = load_torch_checkpoint(tmp_path / "big.bin")
  for name, t in sd.items():
    _assert_same(got[name], t)


@pytest.mark.parametrize("fmt", FORMATS)
def test_namespace_and_fake_fairseq_checkpoint(tmp_path, fmt, monkeypatch):
  omegaconf_create = _install_fake_omegaconf(monkeypatch)
  args = argparse.Namespace(arch="wav2vec2", encoder_layers=12, conv_feature_layers="[(512, 10, 5)] * 2",
                            dropout=0.1, normalize=False, labels=None, layer_sizes=[1, 2])
  sd = collections.OrderedDict([("w2v_encoder.proj.weight", torch.randn(4, 3)),
                                ("w2v_encoder.proj.bias", torch.randn(4).half())])
  cfg = omegaconf_create({
      "model": {"_name": "wav2vec_ctc", "normalize": "${task.normalize}", "w2v_args": None, "layers": [1, {"x": 2}]},
      "task": {"normalize": True, "data": "???"}})
  ckpt = {"args": args, "cfg": cfg, "model": sd, "extra_state": {"epoch": 3, "best": np.float64(1.25)},
          "optimizer_history": [{"criterion_name": "CtcCriterion", "num_updates": 5}]}
  got = load_torch_checkpoint(_save(ckpt, tmp_path / "checkpoint_best.pt", fmt))
  assert isinstance(got["args"], Placeholder)
  assert (got["args"].module, got["args"].name) == ("argparse", "Namespace")
  plain = to_plain(got)
  assert plain["args"] == vars(args)
  assert plain["cfg"] == {"model": {"_name": "wav2vec_ctc", "normalize": True, "w2v_args": None,
                                    "layers": [1, {"x": 2}]}, "task": {"normalize": True, "data": "???"}}
  assert to_plain(got["cfg"], resolve=False)["model"]["normalize"] == "${task.normalize}"
  assert list(plain["model"]) == list(sd) and type(plain["model"]) is dict
  for name, t in sd.items():
    _assert_same(plain["model"][name], t)
  assert plain["optimizer_history"][0]["num_updates"] == 5 and plain["extra_state"]["best"] == 1.25


def _install_fake_omegaconf(monkeypatch):
  """Stand-ins pickling exactly like omegaconf 2.0-2.4 (NEWOBJ, then a `__dict__` with these keys)."""
  mods = {name: types.ModuleType(name) for name in (
      "omegaconf", "omegaconf.base", "omegaconf.nodes", "omegaconf.dictconfig", "omegaconf.listconfig")}
  for name, mod in mods.items():
    monkeypatch.setitem(sys.modules, name, mod)

  def cls(module, name):
    c = type(name, (), {"__module__": module})
    setattr(mods[module], name, c)
    return c

  metadata, container_metadata = cls("omegaconf.base", "Metadata"), cls("omegaconf.base", "ContainerMetadata")
  nodes = {t: cls("omegaconf.nodes", n) for t, n in ((str, "StringNode"), (int, "IntegerNode"),
                                                     (float, "FloatNode"), (bool, "BooleanNode"))}
  any_node, list_config = cls("omegaconf.nodes", "AnyNode"), cls("omegaconf.listconfig", "ListConfig")
  dict_config = cls("omegaconf.dictconfig", "DictConfig")

  def make(value, parent=None, key=None):
    if isinstance(value, (dict, list)):
      node = (dict_config if isinstance(value, dict) else list_config)()
      node._metadata = container_metadata()
      node._metadata.__dict__.update(ref_type=object, key=key, flags={},
                                     resolver_cache=collections.defaultdict(dict))
      node._parent = parent
      items = value.items() if isinstance(value, dict) else enumerate(value)
      content = {k: make(v, node, k) for k, v in items}
      node._content = content if isinstance(value, dict) else list(content.values())
      return node
    node = nodes.get(type(value), any_node)()
    node._metadata, node._parent, node._val = metadata(), parent, value
    node._metadata.__dict__.update(ref_type=object, key=key, optional=True)
    return node

  return make


# A config pickled by real omegaconf 2.0.6 (what fairseq pinned), protocol 2 as torch.save uses, zlib + base64:
# OmegaConf.create({"model": {"_name": "wav2vec2", "encoder_layers": 12, "dropout": 0.1, "normalize":
#   "${task.normalize}", "lst": [1, {"a": 2.5}], "none": None, "flag": True}, "task": {"normalize": False,
#   "data": "???"}, "empty": None}).
_REAL_OMEGACONF_2_0_6 = (
    "eNptlHt71EQUxndpsW1aq1SQehdFXaxUreIdFwShWogab0HFOJud3QnNJvtuksUtjoCKtt7FK34Tv53nTHak4TF/neSZ83vfc8lc2hGmPdkVYZ"
    "p0lttRmHMQdZ3jFB4rQ9QOXEZdY0fDn6nVakFP5qItcoGJbaktkUmHEnIRJXJwenzEwSTl7tS4qeFPU+5AdoJ81JeYCoOgVURxHiVB4LCug2l/"
    "lo6krXMyzMtTM67JSvt5lCYihrPpT9D7uhxh1vV3UtiJRTfDnMbN/rzhZ2k8lIMgFKGSmA/DNI4JR+mZ05YdUcR5KXaLmr6CWz3sMgpELBUXXH"
    "+O3mUsezIZu7jNLVr+FFfeFwP6it2lrYAKz/l9j8btDWOnl7ZljL2KO7aocUdDTSjuwJ0adzXUVEi8KOk6R5ORg7vVjKucTTWr9ioq4B41r4yp"
    "ez3cpxZcxbJqt6orwt9f4oNE9CT2bWt7QoIZ81wKHDxAWg9q7CfdG2dzfSQP0aGHNR4hQ+q6iX1somFNHPDwqJFf9CdZeEjdXzJVnxfDlaEMV/"
    "AYdYV7LpOQtAdBLEZykOGgYhPLGo9z8az1hMaTVa2DrLVitZ7y8HSppZbW5sa9bg/SflrkOGRwz2g8a3HPaTxfxR1i3AsW96KHlyzuZPOfa/z8"
    "TVTe3SQd9EQcbUgcNtyXNZqWe0TjaJV7mLmvWO4xD8ct199FsP0XcpGtL//H1HiVZHhB4yzHiW0DiKPM/lenKLT/1UlSXdV4zW7J6xprYweV34"
    "PTHZwqTZ1gU6etKdfDG2qhejqlDcObdn8W1Z6zeKthyvU03rblvqPxbqXctRqT37Pk9z34BrBKU6lTxDt9RuMD6/ZDjY+qgDoDzlrAxx6CbXu8"
    "ynv8iV+n9ggIY6elEVo7bQ1Z7b5gWsfSuh6U4ZyhqR7hnaSnaGVFS1LTJ81sE4nIgM9prFtwrNGrgiMGJxaceujbsbpjFN8qgEENNDKLyjWKKg"
    "qMGlrUeQ+fWtRm0SrGNN4SjEz/NjQu2P59pqGrtBHTPre0ix4u3XgPXG6ocnG/0PjS2vpK48r/LO7XFvSNh02D2FBLW2NP5v7eMqhvNb6zqO81"
    "fqiithj1o0X95OFnizKb3mw28UtZKl9QstfPR7hquL9q/Ga5v2v8UeVeZe6flvuXh2vjKnkIhFv+F6rLEx4="
)


def _legacy_stream(main_pickle):
  """A legacy torch.save file around a hand-made main pickle without tensors."""
  return b"".join([pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
                   pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2), main_pickle,
                   pickle.dumps([], protocol=2)])


@pytest.mark.parametrize("fmt", FORMATS)
def test_real_omegaconf_pickle(tmp_path, fmt):
  cfg_pickle = zlib.decompress(base64.b64decode(_REAL_OMEGACONF_2_0_6))
  path = tmp_path / "cfg.pt"
  if fmt == "zip":
    with zipfile.ZipFile(path, "w") as z:
      z.writestr("archive/data.pkl", cfg_pickle)
      z.writestr("archive/version", b"3\n")
  else:
    path.write_bytes(_legacy_stream(cfg_pickle))
  got = load_torch_checkpoint(path)
  assert (got.module, got.name) == ("omegaconf.dictconfig", "DictConfig")
  assert to_plain(got) == {"model": {"_name": "wav2vec2", "encoder_layers": 12, "dropout": 0.1, "normalize": False,
                                     "lst": [1, {"a": 2.5}], "none": None, "flag": True},
                           "task": {"normalize": False, "data": "???"}, "empty": None}


class _Evil:
  def __init__(self, func, arg):
    self.func, self.arg = func, arg

  def __reduce__(self):
    return self.func, (self.arg,)


@pytest.mark.parametrize("fmt", FORMATS)
def test_malicious_reduce_never_runs(tmp_path, fmt):
  marker = tmp_path / "pwned"
  payload = {"system": _Evil(os.system, f"touch {marker}"),
             "exec": _Evil(exec, f"open({str(marker)!r}, 'w').close()"),
             "eval": _Evil(eval, f"open({str(marker)!r}, 'w')"),
             "popen": _Evil(subprocess.Popen, ["touch", str(marker)]),
             "weights": torch.ones(2)}
  got = load_torch_checkpoint(_save(payload, tmp_path / "evil.pt", fmt))
  assert not marker.exists()
  assert isinstance(got["system"], Placeholder) and got["system"].name == "system"
  assert got["system"].args == (f"touch {marker}",)
  assert got["exec"].module == "builtins" and got["exec"].name == "exec"
  assert got["eval"].name == "eval" and got["popen"].name == "Popen"
  np.testing.assert_array_equal(got["weights"], np.ones(2, np.float32))


def test_malicious_hand_made_pickles(tmp_path):
  marker = tmp_path / "pwned"
  cmd = f"touch {marker}".encode()
  cmd = b"X" + struct.pack("<I", len(cmd)) + cmd  # BINUNICODE
  os_system_p0 = b"cos\nsystem\n(" + cmd + b"tR."  # What `pickle.dumps(os.system)` style payloads look like.
  posix_system = b"\x80\x02cposix\nsystem\n" + cmd + b"\x85R."
  # getattr(__import__("os"), "system")(cmd): with placeholders, the last call has nothing callable to call.
  getattr_chain = (b"\x80\x02cbuiltins\ngetattr\n(cbuiltins\n__import__\n(X\x02\x00\x00\x00ostR"
                   b"X\x06\x00\x00\x00systemtR" + cmd + b"\x85R.")
  for i, (main, module) in enumerate([(os_system_p0, "os"), (posix_system, "posix"), (getattr_chain, None)]):
    path = tmp_path / f"evil{i}.pt"
    path.write_bytes(_legacy_stream(main))
    if module:
      got = load_torch_checkpoint(path)
      assert isinstance(got, Placeholder) and (got.module, got.name) == (module, "system")
      assert got.args == (f"touch {marker}",)
    else:
      with pytest.raises(ValueError, match="not callable") as e:
        load_torch_checkpoint(path)
      assert str(path) in str(e.value)
    assert not marker.exists()


def test_module_does_not_import_torch(tmp_path):
  path = _save({"w": torch.ones(2, dtype=torch.bfloat16)}, tmp_path / "m.pt", "zip")
  module = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "wav2vec_jax", "interop",
                        "torch_checkpoint.py")
  code = ("import importlib.util, sys; sys.modules['torch'] = None;"  # Any `import torch` now fails.
          f"spec = importlib.util.spec_from_file_location('tc', {module!r});"
          "tc = importlib.util.module_from_spec(spec); spec.loader.exec_module(tc);"
          f"w = tc.load_torch_checkpoint({str(path)!r})['w']; print(w.dtype, w.tolist())")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.split() == ["bfloat16", "[1.0,", "1.0]"]


def test_errors_name_path_and_problem(tmp_path):
  text = tmp_path / "notes.txt"
  text.write_text("hello, not a checkpoint\n")
  plain = tmp_path / "plain.pkl"
  plain.write_bytes(pickle.dumps({"a": 1}))
  for path, what in ((text, "neither a zip archive nor a legacy"), (plain, "no torch magic number")):
    with pytest.raises(ValueError, match="neither a zip") as e:
      load_torch_checkpoint(path)
    assert str(path) in str(e.value) and what in str(e.value)

  sd = {"w": torch.randn(64, 64), "b": torch.randn(64)}
  zipped = _save(sd, tmp_path / "z.pt", "zip")
  cut = tmp_path / "cut.pt"
  cut.write_bytes(zipped.read_bytes()[: zipped.stat().st_size // 2])
  with pytest.raises(ValueError, match="truncated or corrupt zip archive") as e:
    load_torch_checkpoint(cut)
  assert str(cut) in str(e.value)

  missing = tmp_path / "missing.pt"
  with zipfile.ZipFile(zipped) as zin, zipfile.ZipFile(missing, "w") as zout:
    for info in zin.infolist():
      if info.filename != "z/data/0":
        zout.writestr(info.filename, zin.read(info.filename))
  with pytest.raises(ValueError, match=r"missing record 'z/data/0'") as e:
    load_torch_checkpoint(missing)
  assert str(missing) in str(e.value)

  legacy = _save(sd, tmp_path / "l.pt", "legacy")
  short = tmp_path / "short.pt"
  short.write_bytes(legacy.read_bytes()[:-100])
  with pytest.raises(ValueError, match="is truncated"):
    load_torch_checkpoint(short)

  no_zip_pickle = tmp_path / "other.zip"
  with zipfile.ZipFile(no_zip_pickle, "w") as z:
    z.writestr("readme.txt", "hi")
  with pytest.raises(ValueError, match="no <folder>/data.pkl"):
    load_torch_checkpoint(no_zip_pickle)
