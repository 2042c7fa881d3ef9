"""A forced alignment drawn over its waveform (matplotlib): each word's span shaded and labelled."""

import io

import numpy as np

from data_pipelines import storage


def plot_alignment(waveform: np.ndarray, alignment, *, sample_rate: int = 16_000, title: str = "",
                   path: str | None = None):
  """Draws `waveform` with the words of `alignment` (an `inference.alignment.Alignment`) over it.

  Args:
    waveform: `[samples]` float32 audio the alignment was computed on.
    alignment: its `Alignment` (word segments with start/end seconds).
    sample_rate: samples per second of `waveform`.
    title: the figure's title.
    path: when given, the PNG is written there (local or gs://) and the figure closed.

  Returns:
    The matplotlib figure (a pyplot figure without `path`, shown by `plt.show()` or a notebook).
  """
  if path is None:  # for display (a notebook): through pyplot
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
    fig = plt.figure(figsize=(12, 3), dpi=90)
  else:  # for a file: a bare Figure, the process's backend untouched
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
    fig = Figure(figsize=(12, 3), dpi=90)
  waveform = np.asarray(waveform, np.float32).reshape(-1)
  ax = fig.subplots()
  ax.plot(np.arange(waveform.size) / sample_rate, waveform, linewidth=0.4, color="0.3")
  peak = float(np.abs(waveform).max()) or 1.0
  for k, word in enumerate(alignment.words):
    ax.axvspan(word.start, word.end, color="C0" if k % 2 == 0 else "C1", alpha=0.2)
    ax.text((word.start + word.end) / 2, peak * (0.85 if k % 2 == 0 else 0.65), word.label, ha="center",
            fontsize=7)
  ax.set_xlabel("seconds")
  ax.set_yticks([])
  ax.set_xlim(0, waveform.size / sample_rate)
  ax.set_title(title or alignment.utterance, fontsize=9)
  fig.tight_layout()
  if path is not None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    storage.Path(path).write_bytes(buffer.getvalue())
  return fig
