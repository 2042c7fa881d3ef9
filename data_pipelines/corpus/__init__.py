"""A generated multilingual read-speech corpus (eSpeak NG voices, faker word lists) in LibriSpeech layout."""

from data_pipelines.corpus.alignments import WordTiming
from data_pipelines.corpus.alignments import read_unaligned
from data_pipelines.corpus.alignments import read_word_alignments
from data_pipelines.corpus.build import CorpusConfig
from data_pipelines.corpus.build import generate_corpus
from data_pipelines.corpus.cache import cache_root
from data_pipelines.corpus.cache import ensure_corpus
from data_pipelines.corpus.cache import ensure_default_corpus
from data_pipelines.corpus.speakers import SPLITS
from data_pipelines.corpus.speakers import Speaker
from data_pipelines.corpus.speakers import SpeakerCounts
from data_pipelines.corpus.speakers import read_speakers
from data_pipelines.corpus.text import LANGUAGES
from data_pipelines.corpus.text import Language
from data_pipelines.corpus.text import normalize_transcript
