"""Calibrated confidence from exit logits: temperature-scaled softmax, margin, entropy, top-k,
and the coarse (hierarchical) class when the model has one.

>>> p = calibrated_prediction(np.array([[2.0, 0.0, 0.0]], np.float32), temperature=1.0, labels=("a", "b", "c"))
>>> p.label_name, round(p.confidence, 3), round(p.margin, 3), p.top_k[0][0]
('a', 0.787, 0.68, 0)
>>> coarse = calibrated_prediction(np.array([[2.0, 1.9, -5.0]]), labels=("a", "b", "c"),
...                                coarse_labels=("ab", "c"), fine_to_coarse=(0, 0, 1))
>>> coarse.coarse_name, coarse.coarse_confidence > coarse.confidence
('ab', True)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .results import Prediction


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64).reshape(-1) / temperature
    z = np.exp(z - z.max())
    return z / z.sum()


def calibrated_prediction(logits: np.ndarray, temperature: float = 1.0, labels: Sequence[str] = (), top_k: int = 5,
                          coarse_logits: np.ndarray | None = None, coarse_labels: Sequence[str] = (),
                          fine_to_coarse: Sequence[int] = ()) -> Prediction:
    """Turn one exit's logits (shape (C,) or (1, C)) into a Prediction.

    Coarse class: from the exit's coarse head when it has one, else by summing the
    calibrated fine probabilities of each superclass (`fine_to_coarse`).
    """
    probs = softmax(logits, temperature)
    if not np.all(np.isfinite(probs)):
        raise ValueError("exit produced non-finite logits")
    k = min(top_k, probs.size)
    order = np.argsort(-probs, kind="stable")[:max(k, 2)]   # ties: the first, as argmax (ExitResult.label)
    label = int(order[0])
    confidence = float(probs[label])
    second = float(probs[order[1]]) if probs.size > 1 else 0.0
    nonzero = probs[probs > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum())
    coarse_label = coarse_name = coarse_confidence = None
    if coarse_logits is not None:
        coarse_probs = softmax(coarse_logits, temperature)
        coarse_label = int(coarse_probs.argmax())
        coarse_confidence = float(coarse_probs[coarse_label])
    elif len(fine_to_coarse) == probs.size and coarse_labels:
        coarse_probs = np.bincount(np.asarray(fine_to_coarse), weights=probs, minlength=len(coarse_labels))
        coarse_label = int(coarse_probs.argmax())
        coarse_confidence = float(coarse_probs[coarse_label])
    if coarse_label is not None and coarse_label < len(coarse_labels):
        coarse_name = str(coarse_labels[coarse_label])
    probs32 = probs.astype(np.float32)
    probs32.flags.writeable = False
    return Prediction(
        label=label,
        label_name=str(labels[label]) if label < len(labels) else str(label),
        confidence=confidence,
        margin=confidence - second,
        entropy=entropy,
        top_k=tuple((int(i), float(probs[i])) for i in order[:k]),
        probabilities=probs32,
        coarse_label=coarse_label,
        coarse_name=coarse_name,
        coarse_confidence=coarse_confidence,
    )
