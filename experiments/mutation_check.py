r"""Mutation check: does each core claim have a test that fails when the claim is broken?

Each mutation replaces one exact snippet of one file with a plausible bug, in a throw-away copy of the working tree
(tracked and untracked files; not .git, .venv or caches), and runs only the tests that claim to cover it. A test
failing kills the mutation; all of them passing means it SURVIVED: the claim is untested. A snippet must occur
exactly once in its file, so the list fails loudly when the code moves on. Not part of CI (the end-to-end mutation
alone takes minutes); run it after changing a claimed behaviour or its tests:

  python experiments/mutation_check.py                  # every mutation, one after the other (~6 min, 2 cores)
  python experiments/mutation_check.py --only=resume_disabled,ctc_not_zero_infinity
  python experiments/mutation_check.py --list           # names, files and claims
  python experiments/mutation_check.py --baseline       # the listed tests once, unmutated: they must pass

Prints one line per mutation (killed / SURVIVED, seconds, the first failing test) and a summary; the exit status
is 1 when any mutation survived or timed out (or the baseline failed).
"""

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
E2E = "tests/test_pretrain_e2e.py::"
STEP = "tests/test_train_step.py::"

_ONLY = flags.DEFINE_list("only", [], "Run only these mutations (comma-separated names).")
_LIST = flags.DEFINE_bool("list", False, "List the mutations and exit.")
_BASELINE = flags.DEFINE_bool("baseline", False, "Run the selected mutations' tests once, unmutated.")
_TIMEOUT = flags.DEFINE_integer("timeout", 900, "Seconds per mutation (the baseline gets this times the count).")


@dataclasses.dataclass(frozen=True)
class Mutation:
  """One plausible bug: `old` (exactly once in `path`) becomes `new`; one of `tests` should then fail."""

  name: str
  path: str
  old: str
  new: str
  tests: tuple[str, ...]
  claim: str


MUTATIONS = (
    Mutation("resume_disabled", "wav2vec_jax/training/loop.py", "latest = checkpointer.latest_step()",
             "latest = None", (E2E + "test_finetuning_sigkill_either_side_of_the_freeze_is_exact",),
             "a relaunch resumes from the workdir's latest checkpoint"),
    Mutation("loss_change_refused_on_resume", "wav2vec_jax/training/loop.py",
             "set(initialization.REGIME_FIELDS) | set(LOSS_FIELDS)", "set(initialization.REGIME_FIELDS)",
             ("tests/test_failures.py::test_relaunch_with_another_model_names_the_field_and_keeps_the_workdir",),
             "a relaunch may change the pre-training loss (penalty, K, ...) and resumes"),
    Mutation("accumulation_keeps_last_microbatch", "wav2vec_jax/training/step.py",
             "jax.tree_util.tree_map(jnp.add, grads_acc, grads_i)", "grads_i",
             (STEP + "test_ctc_accumulation_equals_one_batch_four_times_the_size",
              STEP + "test_pretraining_accumulation_sums_every_microbatch_under_its_key"),
             "accumulation sums the gradients of every microbatch"),
    Mutation("optimizer_ignores_held_groups", "wav2vec_jax/training/optim.py",
             "return hold(inner) if name in held else inner", "return inner",
             (STEP + "test_freezing_holds_the_trunk_then_trains_it_with_its_own_bias_correction",),
             "a held group (the CTC trunk while frozen) neither moves nor advances its Adam state"),
    Mutation("frozen_group_trains", "wav2vec_jax/training/optim.py", "transforms[FROZEN] = optax.set_to_zero()",
             'transforms[FROZEN] = group("trained")',
             (STEP + "test_step_lowers_loss_and_never_trains_the_conv_encoder",
              STEP + "test_freezing_holds_the_trunk_then_trains_it_with_its_own_bias_correction"),
             "the conv encoder never trains in fine-tuning, not even by weight decay"),
    Mutation("contrastive_includes_padding", "wav2vec_jax/losses.py", "jnp.sum(cross_entropy * valid)",
             "jnp.sum(cross_entropy)", ("tests/test_model.py::test_pretraining_loss_ignores_all_padding_rows",),
             "the contrastive sum covers valid masked slots only"),
    Mutation("masking_probability", "wav2vec_jax/models/masking.py", "jnp.floor(mask_prob * lengths / span + u)",
             "jnp.floor(mask_prob / 2 * lengths / span + u)",
             ("tests/test_masking.py::test_mask_statistics_on_15s_utterances",),
             "span starts per row: floor(mask_prob * length / span + u) (about 49% masked at p=0.65, span 10)"),
    Mutation("masking_without_min_masks", "wav2vec_jax/models/masking.py", "num = jnp.maximum(num, min_masks)",
             "num = num", ("tests/test_masking.py::test_mask_statistics_on_15s_utterances",),
             "every non-empty row gets at least min_masks spans"),
    Mutation("negatives_include_positive", "wav2vec_jax/models/masking.py",
             "draws = draws + (draws >= own).astype(jnp.int32)", "draws = draws",
             ("tests/test_masking.py::test_negatives_come_from_other_masked_frames_of_the_same_row",),
             "distractors are the other masked frames, never the positive itself"),
    Mutation("negatives_from_other_utterances", "wav2vec_jax/losses.py",
             "jnp.take_along_axis(sims, negatives, axis=2)",
             "jnp.take_along_axis(jnp.roll(sims, 1, axis=0), negatives, axis=2)",
             ("tests/test_hf_parity.py::test_pretraining_loss_parity[base]",),
             "distractors come from the same utterance"),
    Mutation("diversity_not_scaled_by_masked_count", "wav2vec_jax/losses.py",
             "/ num_vars * num_masked", "/ num_vars",
             ("tests/test_hf_parity.py::test_pretraining_loss_parity[base]",),
             "the diversity term is multiplied by the masked count, as the contrastive sum scales"),
    Mutation("ctc_not_zero_infinity", "wav2vec_jax/losses.py", "jnp.where(feasible & jnp.isfinite(per_sentence)",
             "jnp.where(jnp.isfinite(per_sentence)", (STEP + "test_ctc_loss_matches_torch",),
             "a sentence that cannot be aligned has zero loss and gradient (zero_infinity)"),
    Mutation("sharding_embed_replicated", "wav2vec_jax/training/partitioning.py",
             '"fsdp": {"embed": "fsdp", "conv_out": "fsdp"},', '"fsdp": {"embed": None, "conv_out": "fsdp"},',
             ("tests/test_sharding.py::test_same_loss_on_every_mesh[mesh_shape1-fsdp]",),
             "FSDP shards the parameters' embed axis over the fsdp mesh axis"),
    Mutation("checkpoint_restores_oldest_step", "wav2vec_jax/training/checkpointing.py",
             "step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)",
             "min(self.manager.all_steps()), args=ocp.args.Composite(state=ocp.args.StandardRestore(target)",
             ("tests/test_checkpointing.py",), "restore(step) returns that step's state and input position"),
    Mutation("checkpoint_drops_input_position", "wav2vec_jax/training/checkpointing.py",
             "return restored.state, restored.data", 'return restored.state, {**restored.data, "step": 0}',
             ("tests/test_checkpointing.py",), "the input position is part of the checkpoint"),
    Mutation("data_resume_restarts_epoch", "data_pipelines/pipeline.py",
             'int(state["epoch"]), int(state["step"])', 'int(state["epoch"]), 0',
             ("tests/test_data_pipeline.py::test_restore_position_continues_identically",),
             "a restored input iterator continues with the batch after the saved one"),
    Mutation("vocabulary_blank_not_first", "data_pipelines/vocab.py", "SPECIALS = (PAD, BOS, EOS, UNK)",
             "SPECIALS = (BOS, PAD, EOS, UNK)", ("tests/test_vocab.py",),
             "id 0 is <pad>, the CTC blank (Hugging Face order of the specials)"),
    Mutation("vocabulary_symbol_order", "data_pipelines/vocab.py", "sorted(counter, key=lambda s: (-counter[s], s))",
             "sorted(counter)", ("tests/test_vocab.py::test_from_transcripts_blank_first_and_frequency_order",),
             "symbols built from transcripts follow the specials by descending frequency"),
)


def copy_tree(dst: str) -> None:
  """Copies the working tree's tracked and untracked (not ignored) files into `dst`."""
  listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                          capture_output=True).stdout.decode().split("\0")
  for rel in filter(None, listed):
    src = os.path.join(REPO, rel)
    if os.path.isfile(src):  # a tracked file deleted in the working tree stays deleted
      os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
      shutil.copy2(src, os.path.join(dst, rel))


def check(mutations, root: str) -> None:
  """Fails loudly, naming the mutation, when a snippet is not exactly once in its file or a test file is missing."""
  problems = []
  for m in mutations:
    path = os.path.join(root, m.path)
    count = 0
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        count = f.read().count(m.old)
    if count != 1:
      problems.append(f"{m.name}: {m.old!r} occurs {count} times in {m.path} (must be exactly once)")
    problems += [f"{m.name}: no test file {t.split('::')[0]}" for t in m.tests
                 if not os.path.exists(os.path.join(root, t.split("::")[0]))]
  if problems:
    sys.exit("mutation list out of date:\n  " + "\n  ".join(problems))


def env_for(root: str) -> dict:
  # PYTHONPATH: the editable install points at the checkout, and e2e subprocesses run scripts from experiments/.
  # No bytecode: a restored file of a mutation's size and second would otherwise reuse the mutant's .pyc.
  return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
              PYTHONPATH=root, PYTHONDONTWRITEBYTECODE="1")


def run_tests(root: str, tests, timeout: int, stop_first: bool = True):
  """Runs pytest on `tests` in `root`. Returns (pytest exit status or None on timeout, seconds, first failure, out)."""
  cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(["-x"] if stop_first else []), *tests]
  start = time.time()
  proc = subprocess.Popen(cmd, cwd=root, env=env_for(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)
  try:
    out, _ = proc.communicate(timeout=timeout)
    rc = proc.returncode
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)  # the e2e tests' training subprocesses too
    out, rc = proc.communicate()[0], None
  failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
  return rc, time.time() - start, failed[0] if failed else "-", out


def mutate_and_test(m: Mutation, root: str, timeout: int):
  """Applies `m` in the copy, runs its tests, restores the file. Returns (status, seconds, first failure)."""
  path = os.path.join(root, m.path)
  with open(path, encoding="utf-8") as f:
    original = f.read()
  try:
    with open(path, "w", encoding="utf-8") as f:
      f.write(original.replace(m.old, m.new))
    rc, seconds, failure, out = run_tests(root, m.tests, timeout)
  finally:
    with open(path, "w", encoding="utf-8") as f:
      f.write(original)
  if rc is None:
    return "TIMEOUT", seconds, failure
  if rc in (1, 2) and failure != "-":  # 1: a test failed; 2: collection failed (e.g. the mutant does not import)
    return "killed", seconds, failure
  if rc == 0:
    return "SURVIVED", seconds, failure
  print(out[-3000:])
  return f"ERROR(rc={rc})", seconds, failure


def main(argv):
  del argv
  unknown = set(_ONLY.value) - {m.name for m in MUTATIONS}
  if unknown:
    sys.exit(f"unknown mutations {sorted(unknown)}; --list shows them")
  mutations = [m for m in MUTATIONS if not _ONLY.value or m.name in _ONLY.value]
  if _LIST.value:
    for m in mutations:
      print(f"{m.name:38s} {m.path:40s} {m.claim}")
    return 0
  with tempfile.TemporaryDirectory(prefix="mutation_check_") as root:
    copy_tree(root)
    check(mutations, root)
    where = subprocess.run([sys.executable, "-c", "import data_pipelines, wav2vec_jax; "
                            "print(wav2vec_jax.__file__, data_pipelines.__file__)"], cwd=root, env=env_for(root),
                           check=True, capture_output=True, text=True).stdout.split()
    if not all(p.startswith(os.path.realpath(root)) or p.startswith(root) for p in where):
      sys.exit(f"the copy's packages are not the ones imported: {where}")
    if _BASELINE.value:
      tests = list(dict.fromkeys(t for m in mutations for t in m.tests))
      rc, seconds, failure, out = run_tests(root, tests, _TIMEOUT.value * len(mutations), stop_first=False)
      print(out[-3000:] if rc else out.strip().splitlines()[-1])
      print(f"baseline: {len(tests)} test ids, {'passed' if rc == 0 else 'FAILED'} in {seconds:.0f}s")
      return 0 if rc == 0 else 1
    results = []
    for m in mutations:
      status, seconds, failure = mutate_and_test(m, root, _TIMEOUT.value)
      results.append(status)
      print(f"{status:9s} {m.name:38s} {seconds:6.1f}s  {failure}", flush=True)
  killed = results.count("killed")
  print(f"{killed}/{len(results)} mutations killed" + (f"; not killed: {len(results) - killed}" if
                                                         killed < len(results) else ""))
  return 0 if killed == len(results) else 1


if __name__ == "__main__":
  app.run(main)
