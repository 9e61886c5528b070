"""The WordNet concept hierarchy: known paths, the snowflake tables, and the shipped file."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select, text

from imgclass.warehouse.concepts import class_label, imagenet_concepts
from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import upgrade
from imgclass.warehouse.schema import class_concept, concept_dim
from tests.support.system import require_file

REPO = Path(__file__).resolve().parents[2]
TABBY = 281
GOLDEN_RETRIEVER = 207
TABBY_PATH = [
    "animal",
    "chordate",
    "vertebrate",
    "mammal",
    "placental",
    "carnivore",
    "feline",
    "cat",
    "domestic_cat",
    "tabby",
]


def names(class_id: int) -> list[str]:
    return [c.name for c in imagenet_concepts().paths[class_id]]


def test_known_paths_in_the_data_file():
    assert names(TABBY) == TABBY_PATH
    assert imagenet_concepts().paths[TABBY][-1].wnid == "n02123045"
    retriever = names(GOLDEN_RETRIEVER)
    assert retriever[: retriever.index("dog") + 1] == [*TABBY_PATH[:6], "canine", "dog"]
    assert retriever[-1] == "golden_retriever"
    assert names(517)[:3] == ["artifact", "instrumentality", "device"]  # crane, the machine


def test_the_documented_examples_are_what_the_data_says():
    # README (concept:N) and scripts/build_concepts.py describe the tree with these.
    paths = imagenet_concepts().paths.values()
    tops = {path[0].name for path in paths}
    assert {"animal", "artifact", "matter", "relation", "natural_object", "person"} <= tops
    assert "food" not in tops
    animals = {path[3].name for path in paths if path[0].name == "animal" and len(path) > 3}
    assert {"mammal", "bird", "reptile", "insect", "aquatic_vertebrate"} <= animals
    assert "fish" not in animals
    assert names(1)[3:5] == ["aquatic_vertebrate", "fish"]  # goldfish
    assert names(963)[:3] == ["matter", "substance", "food"]  # pizza
    assert names(967) == [  # espresso
        "relation",
        "part",
        "substance",
        "fluid",
        "liquid",
        "beverage",
        "coffee",
        "espresso",
    ]
    children = {path[1].name for path in paths}
    assert {"chordate", "instrumentality", "substance"} <= children


def test_labels_are_unique_and_comma_free():
    labels = imagenet_concepts().labels
    assert len(labels) == 1000 and len(set(labels.values())) == 1000
    assert not any("," in label or " " in label for label in labels.values())
    assert labels[TABBY] == "tabby" and labels[283] == "Persian_cat"
    assert (labels[134], labels[517]) == ("crane_134", "crane_517")
    assert class_label(-1, "none") == "none"
    assert class_label(5000, "sea otter, otter") == "sea_otter"


def test_migration_loads_the_hierarchy_as_a_tree(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    upgrade(engine)
    with engine.connect() as conn:
        tabby = conn.execute(select(concept_dim).where(concept_dim.c.wnid == "n02123045")).one()
        chain, key = [], tabby.concept_key
        while key is not None:
            node = conn.execute(select(concept_dim).where(concept_dim.c.concept_key == key)).one()
            chain.insert(0, (node.name, node.depth))
            key = node.parent_key
        assert chain == [(name, depth) for depth, name in enumerate(TABBY_PATH)]
        # class_concept: the ancestor at every depth, the class itself below its own depth.
        at = dict(
            conn.execute(
                select(class_concept.c.depth, concept_dim.c.name)
                .join(concept_dim, concept_dim.c.concept_key == class_concept.c.concept_key)
                .where(class_concept.c.class_id == TABBY)
            ).all()
        )
        top = imagenet_concepts().max_depth
        assert [at[d] for d in range(top + 1)] == TABBY_PATH + ["tabby"] * (top + 1 - 10)
        dogs = conn.execute(
            text(
                "SELECT DISTINCT cc.class_id FROM class_concept cc "
                "JOIN concept_dim c ON c.concept_key = cc.concept_key WHERE c.name = 'dog'"
            )
        ).scalars()
        assert sorted(dogs) == list(range(151, 269))  # ImageNet's 118 dog breeds


def test_data_file_is_what_the_script_makes_from_wordnet(tmp_path):
    require_file("/usr/share/wordnet/data.noun", "wordnet-base")
    out = tmp_path / "concepts.json.gz"
    subprocess.run(
        [sys.executable, str(REPO / "scripts/build_concepts.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    shipped = REPO / "src/imgclass/warehouse/data/imagenet_concepts.json.gz"
    assert gzip.decompress(out.read_bytes()) == gzip.decompress(shipped.read_bytes())
