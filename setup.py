"""wav2vec_jax: wav2vec 2.0 / XLSR pre-training, CTC fine-tuning and decoding in JAX/Flax."""

import setuptools

INSTALL_REQUIRES = [
    "jax>=0.10",
    "flax>=0.12",
    "optax",
    "orbax-checkpoint",
    "tensorflow-cpu",
    "tensorflow-datasets",
    "librosa",
    "soundfile",
    "absl-py",
    "ml-collections",
    "numpy",
    "safetensors",
    "espeakng-loader",
    "jiwer",
    "kenlm",  # n-gram LM queries for beam search (inference/beam.py)
    "faker",
    "soxr",
    "tensorboard",
    "matplotlib",  # training curves (curves.png, experiments/plot.py) and alignment plots
    "etils[epath]",  # the one path abstraction (data_pipelines/storage.py); gs:// through gcsfs
    "gcsfs",
]

EXTRAS = {
    # The reference implementation for parity tests. torch is pinned so pip takes the CPU wheel on disk.
    # nbclient + ipykernel execute the quickstart notebook.
    "test": ["pytest", "pytest-xdist", "torch==2.13.0", "transformers", "gcp-storage-emulator", "nbclient",
             "nbformat", "ipykernel"],
}

setuptools.setup(
    name="wav2vec_jax",
    version="0.1.0",
    description="wav2vec 2.0 / XLSR in JAX/Flax: pre-training, CTC fine-tuning, decoding.",
    packages=setuptools.find_packages(include=["wav2vec_jax", "wav2vec_jax.*", "data_pipelines", "data_pipelines.*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
