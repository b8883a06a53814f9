"""Embeddings in batches, cached on disk by (content, backbone, preprocessing, flip-averaging)."""

from dataclasses import replace

import numpy as np
import pytest

from classifier.ml import embed
from classifier.ml.backbone_specs import embedding_key, get_spec
from classifier.ml.backbones import load_backbone
from classifier.ml.datasets import assign_splits, image_folder
from classifier.ml.embed import EmbeddingCache, embed_items


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def items(tiny_tree):
    return assign_splits(image_folder(tiny_tree))[:3]


@pytest.fixture
def no_backbone(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the backbone was loaded although every embedding was cached")

    monkeypatch.setattr(embed, "load_backbone", refuse)


def test_it_returns_float32_rows_in_item_order(items, lite0):
    one_by_one = [embed_items([item], backbone="efficientnet_lite0", model=lite0)[0] for item in items]
    together = embed_items(items, backbone="efficientnet_lite0", model=lite0, batch_size=2)
    assert together.dtype == np.float32
    assert together.shape == (3, 1280)
    assert np.allclose(together, np.stack(one_by_one), atol=1e-4)


def test_it_reuses_the_cache_without_loading_the_backbone(items, lite0, tmp_path, monkeypatch):
    first = embed_items(items, backbone="efficientnet_lite0", model=lite0, cache_dir=tmp_path)
    monkeypatch.setattr(embed, "load_backbone", lambda *a, **k: pytest.fail("backbone loaded despite the cache"))

    again = embed_items(items, backbone="efficientnet_lite0", cache_dir=tmp_path)

    assert np.array_equal(first, again)
    assert all(EmbeddingCache(tmp_path).path(i.sha256, "efficientnet_lite0", False).is_file() for i in items)


def test_it_keeps_flip_averaged_embeddings_apart(items, lite0, tmp_path):
    plain = embed_items(items, backbone="efficientnet_lite0", model=lite0, cache_dir=tmp_path)
    flipped = embed_items(items, backbone="efficientnet_lite0", model=lite0, cache_dir=tmp_path, tta=True)

    assert not np.allclose(plain, flipped)
    assert np.array_equal(flipped, embed_items(items, backbone="efficientnet_lite0", cache_dir=tmp_path, tta=True))


def test_it_recomputes_a_damaged_cache_entry(items, lite0, tmp_path):
    first = embed_items(items[:1], backbone="efficientnet_lite0", model=lite0, cache_dir=tmp_path)
    EmbeddingCache(tmp_path).path(items[0].sha256, "efficientnet_lite0", False).write_bytes(b"garbage")

    again = embed_items(items[:1], backbone="efficientnet_lite0", model=lite0, cache_dir=tmp_path)

    assert np.allclose(first, again, atol=1e-5)


def test_it_reports_progress(items, lite0):
    seen = []
    embed_items(items, backbone="efficientnet_lite0", model=lite0, batch_size=2,
                progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)


def test_it_keeps_each_preprocessing_apart_so_a_changed_spec_never_reads_old_features(items, lite0, tmp_path):
    own = get_spec("efficientnet_lite0").preprocessing
    tf_crop = replace(own, resize_size=256)  # the spec before it kept the whole short side
    current = embed_items(items, backbone="efficientnet_lite0", model=lite0, cache_dir=tmp_path)
    before = embed_items(items, backbone="efficientnet_lite0", model=lite0, cache_dir=tmp_path, preprocessing=tf_crop)

    assert not np.allclose(current, before, atol=1e-3)
    cache = EmbeddingCache(tmp_path)
    assert cache.path(items[0].sha256, "efficientnet_lite0", False) != cache.path(
        items[0].sha256, "efficientnet_lite0", False, tf_crop)
    assert np.array_equal(before, embed_items(items, backbone="efficientnet_lite0", cache_dir=tmp_path,
                                              preprocessing=tf_crop))


def test_stored_features_are_keyed_by_backbone_and_preprocessing():
    own = get_spec("efficientnet_lite1").preprocessing
    assert embedding_key("efficientnet_lite1", own) == "efficientnet_lite1"
    assert embedding_key("efficientnet_lite1", replace(own, resize_size=272)) == "efficientnet_lite1@272-240"
    assert embedding_key("not_registered", own) == "not_registered"
