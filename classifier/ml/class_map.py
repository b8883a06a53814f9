"""Project classes onto ImageNet classes, from the shipped table of animal names.

Plain data and no torch (the web process maps a new class when it is created); zero_shot.py
turns a mapping into the network's head.
"""

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

OTHER = "other"
DATA_FILE = Path(__file__).parent / "data" / "imagenet_animals.json"


@dataclass(frozen=True)
class AnimalEntry:
    name: str
    aliases: tuple[str, ...]
    imagenet: tuple[int, ...]


@lru_cache(maxsize=4)
def load_animal_table(path: str | Path = DATA_FILE) -> dict[str, AnimalEntry]:
    """Every known name and alias -> its entry."""
    raw = json.loads(Path(path).read_text())
    table: dict[str, AnimalEntry] = {}
    for name, item in raw["animals"].items():
        entry = AnimalEntry(name=name, aliases=tuple(item.get("aliases", ())), imagenet=tuple(item["imagenet"]))
        for key in (name, *entry.aliases):
            table[normalise_name(key)] = entry
    return table


def normalise_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def lookup_animal(name: str, table: Mapping[str, AnimalEntry] | None = None) -> AnimalEntry | None:
    """The entry for a class name: exact, then singular, then the longest run of its words.

    Folder-style names like "cougar_body" or "sea_lion_pup" still find "cougar" and
    "sea lion"; a name that matches nothing returns None and maps to "other".
    """
    table = load_animal_table() if table is None else table
    key = normalise_name(name)
    for candidate in (key, key[:-1] if key.endswith("s") else None, key[:-2] if key.endswith("es") else None):
        if candidate and candidate in table:
            return table[candidate]
    words = key.split(" ")
    for length in range(len(words) - 1, 0, -1):
        for start in range(len(words) - length + 1):
            candidate = " ".join(words[start:start + length])
            if candidate in table:
                return table[candidate]
    return None


def default_mapping(class_names: Sequence[str]) -> dict[str, list[int]]:
    """class name -> ImageNet indices, from the shipped table ([] where nothing matches)."""
    mapping = {}
    for name in class_names:
        entry = lookup_animal(name)
        mapping[name] = list(entry.imagenet) if entry else []
    return mapping
