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


@dataclass(frozen=True)
class ConceptNames:
    """Every name and wnid a concept filter can take, overall and at each depth."""

    any_depth: frozenset[str]
    by_depth: tuple[frozenset[str], ...]  # depth N: the concept:N value of some class
    by_lower: dict[str, tuple[str, ...]]  # lower-cased name or wnid -> the spellings we have


@lru_cache(maxsize=1)
def concept_names() -> ConceptNames:
    data = imagenet_concepts()
    by_depth: list[set[str]] = [set() for _ in range(data.max_depth + 1)]
    for path in data.paths.values():
        for depth in range(data.max_depth + 1):
            # Below its own depth a class is its own concept (as class_concept maps it).
            concept = path[min(depth, len(path) - 1)]
            by_depth[depth].update((concept.name, concept.wnid))
    every = frozenset().union(*by_depth)
    lower: dict[str, set[str]] = {}
    for name in every:
        lower.setdefault(name.lower(), set()).add(name)
    return ConceptNames(
        every,
        tuple(frozenset(names) for names in by_depth),
        {key: tuple(sorted(names)) for key, names in lower.items()},
    )


def resolve_concept(value: str, depth: int | None = None) -> tuple[str, ...]:
    """The concept names (or wnid) that ``value`` means; () when it names none (at ``depth``).

    Case does not matter, except between names that differ only in case (``Cardigan``
    the corgi, ``cardigan`` the sweater), where the exact spelling picks one.
    """
    names = concept_names()
    known = names.any_depth if depth is None else names.by_depth[depth]
    value = normalize_name(value)
    if value in known:
        return (value,)
    return tuple(n for n in names.by_lower.get(value.lower(), ()) if n in known)


@lru_cache(maxsize=1)
def _labels_by_lower() -> dict[str, tuple[str, ...]]:
    lower: dict[str, set[str]] = {}
    for label in [*imagenet_concepts().labels.values(), NONE_LABEL]:
        lower.setdefault(label.lower(), set()).add(label)
    return {key: tuple(sorted(labels)) for key, labels in lower.items()}


def resolve_class(value: str) -> tuple[str, ...]:
    """The class labels (or wnid) ``value`` means, case aside (as ``resolve_concept``).

    A value that is no shipped label is kept as given: a warehouse can hold classes of
    another model, and a class nobody was answered with simply has no events.
    """
    value = normalize_name(value)
    found = _labels_by_lower().get(value.lower(), ())
    if value in found:
        return (value,)
    if found:
        return found
    if value[:1] in ("n", "N") and value[1:].isdigit():
        return (value.lower(),)  # a WordNet id: n02123045
    return (value,)


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
