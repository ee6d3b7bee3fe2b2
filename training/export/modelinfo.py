"""The bundle's model info (labels, preprocessing, superclasses) of a model trained on a packed dataset.

The coarse side comes from the dataset (training/data.py): GTSRB has six superclasses and a fine ->
coarse map, CIFAR-10 none. Every bundle of a GTSRB model carries them (the runtime names a coarse
class by summing fine probabilities per superclass); a hierarchical model (`hierarchical=True`,
whose head graphs have a second output `coarse`, bound to `Exit.coarse_tensor`) needs them, and the
exporter checks that the coarse heads have one logit per superclass.

>>> info = dataset_model_info("gtsrb32", "is-resnext", "demo", (1, 3, 32, 32))
>>> len(info.labels), info.coarse_labels[0], info.fine_to_coarse[14]
(43, 'speed limits', 5)
"""

from __future__ import annotations

from typing import Mapping, Sequence

from edge_anytime.manifest import InputSpec, ModelInfo


def dataset_model_info(dataset: str, arch: str, name: str, input_shape: Sequence[int],
                       normalisation: Mapping | None = None, class_names: Sequence[str] | None = None) -> ModelInfo:
    """ModelInfo for `arch` trained on `dataset`; `normalisation` is a checkpoint's {"mean", "std", "scale"}
    (scale: the multiplier 1/255 as the trainer stores it, or the divisor 255), default the dataset's."""
    from ..data import dataset_info

    info = dataset_info(dataset)
    norm = dict(normalisation or {})
    scale = float(norm.get("scale", 1 / 255))
    spec = InputSpec("image", tuple(int(d) for d in input_shape), "float32", "NCHW",
                     mean=tuple(float(v) for v in norm.get("mean", info.mean)),
                     std=tuple(float(v) for v in norm.get("std", info.std)),
                     scale=1.0 / scale if scale < 1 else scale)
    return ModelInfo(name=name, arch=arch, labels=tuple(class_names or info.class_names), input=spec,
                     dataset=dataset, coarse_labels=tuple(info.superclass_names),
                     fine_to_coarse=tuple(info.fine_to_coarse))
