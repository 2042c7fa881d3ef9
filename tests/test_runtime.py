"""Process-level set-up of the entry points (`training/runtime.py`)."""

import json
import subprocess
import sys
import textwrap

import pytest

# A fresh interpreter (the setting is process-wide and final): where glibc puts a 64 MB buffer (its own mapping, or
# the heap), whether freeing it hands the memory back, and the page faults of allocating, writing and freeing it,
# before and after `reuse_freed_host_memory`.
_PROBE = textwrap.dedent("""
    import ctypes, json, resource
    import numpy as np
    from wav2vec_jax.training import runtime

    class Mallinfo2(ctypes.Structure):
      _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]
    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = Mallinfo2

    def probe():
      np.ones(16 << 20, np.float32)  # the first one may grow the heap
      before = mallinfo2()
      buffer = np.ones(16 << 20, np.float32)  # 64 MB
      mapped = mallinfo2().hblkhd - before.hblkhd  # bytes in chunks with their own mapping
      del buffer
      kept = mallinfo2().fordblks  # free bytes the heap keeps
      faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      for _ in range(10):
        np.ones(16 << 20, np.float32)
      return {"mapped": mapped, "kept": kept,
              "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 10}

    default = probe()
    applied = runtime.reuse_freed_host_memory()
    print(json.dumps({"default": default, "applied": applied, "reused": probe()}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_host_memory_is_kept_in_the_heap_and_reused_without_page_faults():
  out = json.loads(subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True,
                                  text=True).stdout)
  default, reused = out["default"], out["reused"]
  assert out["applied"]
  # glibc's default: the buffer gets its own mapping, unmapped on free; each new one is faulted in (and zeroed) again.
  assert default["mapped"] >= 64 << 20 and default["kept"] < 64 << 20 and default["faults"] > 100, out
  # Reused: it comes from the heap, which keeps it when freed, and the next one is written without a fault.
  assert reused["mapped"] == 0 and reused["kept"] >= 64 << 20 and reused["faults"] < 10, out
