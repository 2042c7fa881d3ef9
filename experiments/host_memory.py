"""`--host_memory`, shared by the benchmark scripts: the host allocator setting they measure under.

`reuse` (the default) is how every entry point runs (`runtime.reuse_freed_host_memory`: freed memory stays in
glibc's heap instead of being unmapped and faulted in again at every step); `glibc` leaves glibc's default. The
setting is process-wide and final, so compare the two by running both in one command.
"""

from absl import flags

flags.DEFINE_enum("host_memory", "reuse", ["reuse", "glibc"],
                  "Host allocator: glibc's malloc keeping freed memory for reuse, as the entry points run "
                  "(runtime.reuse_freed_host_memory), or left as glibc sets it (to compare: run both in one command).")


def apply_from_flags() -> str:
  """Applies --host_memory (call first, before anything is allocated); returns the setting in effect, "reuse" or
  "glibc" (reuse is refused where the C library is not glibc)."""
  from wav2vec_jax.training import runtime  # pylint: disable=g-import-not-at-top  (imports JAX)
  reuse = flags.FLAGS.host_memory == "reuse" and runtime.reuse_freed_host_memory()
  return "reuse" if reuse else "glibc"
