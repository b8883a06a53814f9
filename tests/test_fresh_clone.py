"""The suite needs nothing outside the repo: its photos ship in tests/data (`.ci/fresh_clone` runs the
data-dependent tests in a clone with no shared/ folder beside it)."""

import hashlib
import re

from classifier.ml.datasets import image_folder
from tests.helpers import DATASET, DEMO_PHOTOS, REPO

# Ways a test could reach the project's shared folder beside the checkout.
OUTSIDE = re.compile(r"""REPO\.parent|\.\./shared|["']shared["']\s*/\s*["']datasets""")


def test_no_test_reads_a_folder_beside_the_repo():
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "tests").rglob("*.py"))
        if path.name != "test_fresh_clone.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]

    assert offenders == []


def test_the_test_photos_are_in_the_repo_and_intact():
    assert DATASET.is_relative_to(REPO) and DEMO_PHOTOS.is_relative_to(REPO)
    listed = dict(reversed(line.split("  ./", 1)) for line in (DATASET / "SHA256SUMS").read_text().splitlines())
    items = image_folder(DATASET)

    assert sorted(str(i.path.relative_to(DATASET)) for i in items) == sorted(listed)
    assert all(hashlib.sha256(i.path.read_bytes()).hexdigest() == listed[str(i.path.relative_to(DATASET))]
               for i in items)
    assert "CC BY 4.0" in (DATASET / "README.md").read_text()
