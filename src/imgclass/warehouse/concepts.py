"""ImageNet classes as WordNet concepts: class labels and hypernym paths.

The data file ``data/imagenet_concepts.json.gz`` is generated once from WordNet 3.0 by
``scripts/build_concepts.py`` (its docstring says how a path is chosen and what depth 0
is) and loaded into ``concept_dim``/``class_concept`` by migration 0003. This module reads
it for the migration and gives every class a short, comma-free label for the analytics
API (``tabby``, ``Persian_cat``).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

MAX_LABEL = 128
NONE_LABEL = "none"  # the class of failed requests (class_dim key 0)


@dataclass(frozen=True)
class Concept:
    wnid: str
    name: str


@dataclass(frozen=True)
class ConceptData:
    max_depth: int
    labels: dict[int, str]  # ImageNet class id -> label
    paths: dict[int, tuple[Concept, ...]]  # class id -> path from depth 0 to the class


@lru_cache(maxsize=1)
def imagenet_concepts() -> ConceptData:
    raw = files("imgclass.warehouse").joinpath("data", "imagenet_concepts.json.gz").read_bytes()
    data = json.loads(gzip.decompress(raw))
    classes = data["classes"]
    return ConceptData(
        max_depth=int(data["max_depth"]),
        labels={int(k): v["label"] for k, v in classes.items()},
        paths={
            int(k): tuple(Concept(wnid, name) for wnid, name in v["path"])
            for k, v in classes.items()
        },
    )


def normalize_name(name: str) -> str:
    """Labels and concept names are written with underscores; accept spaces too."""
    return name.strip().replace(" ", "_")


def class_label(class_id: int, class_name: str) -> str:
    """The label of a class: the shipped one for ImageNet ids, else its first synonym."""
    if class_id < 0:
        return NONE_LABEL
    known = imagenet_concepts().labels.get(class_id)
    if known is not None:
        return known
    return normalize_name(class_name.split(",")[0])[:MAX_LABEL] or str(class_id)
