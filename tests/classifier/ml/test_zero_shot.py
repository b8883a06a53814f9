"""Zero-shot: class names found in the shipped table, ImageNet probabilities summed onto them."""

import pytest
import torch

from classifier.ml.zero_shot import (
    NUM_IMAGENET_CLASSES,
    OTHER,
    ZeroShotHead,
    assignment_matrix,
    default_mapping,
    lookup_animal,
)

DALMATIAN = 251
FLAMINGO = 130
TENCH = 0  # a fish no test class claims
OX = 345


def test_it_finds_an_exact_name():
    entry = lookup_animal("dalmatian")
    assert entry.name == "dalmatian"
    assert entry.imagenet == (DALMATIAN,)


def test_it_finds_an_alias():
    assert lookup_animal("puma").name == "cougar"


def test_it_ignores_case_and_spacing():
    assert lookup_animal("  Mountain_Lion ").name == "cougar"


def test_it_finds_a_plural():
    assert lookup_animal("dogs").name == "dog"


def test_it_finds_an_es_plural_that_is_not_an_alias():
    assert lookup_animal("foxes").name == "fox"


def test_it_finds_a_folder_style_name():
    assert lookup_animal("cougar_body").name == "cougar"


def test_it_returns_none_for_an_unknown_name():
    assert lookup_animal("motorbike") is None


def test_it_maps_class_names_to_imagenet_indices():
    mapping = default_mapping(["dalmatian", "flamingo", "motorbike"])
    assert mapping == {"dalmatian": [DALMATIAN], "flamingo": [FLAMINGO], "motorbike": []}


def test_it_gives_every_imagenet_class_exactly_one_column():
    matrix = assignment_matrix(["dog", "flamingo"], default_mapping(["dog", "flamingo"]))
    assert matrix.shape == (NUM_IMAGENET_CLASSES, 3)
    assert torch.equal(matrix.sum(dim=1), torch.ones(NUM_IMAGENET_CLASSES))
    assert set(matrix.unique().tolist()) == {0.0, 1.0}


def test_it_puts_unmapped_imagenet_classes_in_the_last_column():
    matrix = assignment_matrix(["dalmatian", "flamingo"], default_mapping(["dalmatian", "flamingo"]))
    assert matrix[FLAMINGO].tolist() == [0.0, 1.0, 0.0]
    assert matrix[TENCH].tolist() == [0.0, 0.0, 1.0]
    assert matrix[:, 2].sum() == NUM_IMAGENET_CLASSES - 2


def test_it_gives_an_overlap_to_the_more_specific_class():
    classes = ["dog", "dalmatian"]
    mapping = default_mapping(classes)
    assert DALMATIAN in mapping["dog"]

    matrix = assignment_matrix(classes, mapping)

    assert matrix[DALMATIAN].tolist() == [0.0, 1.0, 0.0]
    assert matrix[mapping["dog"][0]].tolist() == [1.0, 0.0, 0.0]


def test_it_gives_an_overlap_to_the_more_specific_class_in_either_order():
    classes = ["dalmatian", "dog"]
    matrix = assignment_matrix(classes, default_mapping(classes))
    assert matrix[DALMATIAN].tolist() == [1.0, 0.0, 0.0]


def test_it_rejects_an_index_out_of_range():
    with pytest.raises(ValueError, match="1000"):
        assignment_matrix(["dog"], {"dog": [1000]})


def test_it_rejects_a_negative_index():
    with pytest.raises(ValueError, match="-1"):
        assignment_matrix(["dog"], {"dog": [-1]})


def test_it_reserves_other_as_a_class_name():
    with pytest.raises(ValueError, match=OTHER):
        assignment_matrix(["dog", OTHER], {"dog": [151]})


@pytest.fixture
def head() -> ZeroShotHead:
    classes = ["dalmatian", "flamingo", "dog"]
    return ZeroShotHead(classes, default_mapping(classes))


def spike(index: int, batch: int = 1) -> torch.Tensor:
    logits = torch.zeros(batch, NUM_IMAGENET_CLASSES)
    logits[:, index] = 20.0
    return logits


def test_it_outputs_probabilities_that_sum_to_one(head):
    probs = head(torch.randn(8, NUM_IMAGENET_CLASSES) * 5)
    assert probs.shape == (8, 4)
    assert (probs >= 0).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(8), atol=1e-6)


def test_it_predicts_the_class_a_spike_is_mapped_to(head):
    assert head(spike(FLAMINGO)).argmax(dim=1).item() == 1
    assert head(spike(DALMATIAN)).argmax(dim=1).item() == 0


def test_it_sums_all_of_a_class_imagenet_indices(head):
    # Two dog breeds, each less likely than a tench, together make "dog" more likely than "other"
    logits = torch.zeros(2, NUM_IMAGENET_CLASSES)
    logits[:, TENCH] = 7.5
    logits[0, 152] = 7.0
    logits[1, [152, 153]] = 7.0
    assert head(logits).argmax(dim=1).tolist() == [3, 2]


def test_it_predicts_other_for_a_spike_on_an_unmapped_class(head):
    probs = head(spike(TENCH))
    assert probs.argmax(dim=1).item() == 3
    assert probs[0, 3] > 0.99


# --- top k: only each image's most likely ImageNet classes count ------------------------------

def dogs_against_an_ox() -> torch.Tensor:
    """One confident ox (p ~ 0.17), each of the 118 dog breeds at ~0.005 (together ~0.6)."""
    logits = torch.zeros(1, NUM_IMAGENET_CLASSES)
    logits[0, default_mapping(["dog"])["dog"]] = 3.0
    logits[0, OX] = 6.5
    return logits


def test_the_long_tail_of_dog_breeds_outweighs_a_confident_ox_in_the_sum_over_all():
    classes = ["dog", "ox"]
    probs = ZeroShotHead(classes, default_mapping(classes))(dogs_against_an_ox())
    assert probs.argmax(dim=1).item() == 0


def test_top_k_counts_only_the_images_top_classes():
    classes = ["dog", "ox"]
    logits = dogs_against_an_ox()
    p = torch.softmax(logits, dim=1)[0]

    probs = ZeroShotHead(classes, default_mapping(classes), top_k=5)(logits)[0]

    # ox and four dog breeds are the top five; the other 114 breeds no longer count
    assert probs.argmax().item() == 1
    assert probs[1].item() == pytest.approx((p[OX] / (p[OX] + 4 * p[151])).item(), rel=1e-5)
    assert probs[2].item() == 0.0  # no unmapped class is among the top five


def test_top_k_probabilities_sum_to_one():
    classes = ["dalmatian", "flamingo", "dog"]
    probs = ZeroShotHead(classes, default_mapping(classes), top_k=5)(torch.randn(16, NUM_IMAGENET_CLASSES) * 4)
    assert (probs >= 0).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(16), atol=1e-6)


def test_top_k_other_is_the_most_likely_unmapped_class_within_the_top_k():
    classes = ["dalmatian", "flamingo"]
    logits = torch.zeros(1, NUM_IMAGENET_CLASSES)
    logits[0, [TENCH, DALMATIAN, FLAMINGO, 1, 2]] = torch.tensor([8.0, 7.0, 6.0, 5.0, 4.0])
    p = torch.softmax(logits, dim=1)[0]

    probs = ZeroShotHead(classes, default_mapping(classes), top_k=3)(logits)[0]

    expected = torch.stack([p[DALMATIAN], p[FLAMINGO], p[TENCH]])
    assert torch.allclose(probs, expected / expected.sum(), atol=1e-6)


def test_top_k_of_all_imagenet_classes_is_the_sum_over_all():
    classes = ["dalmatian", "flamingo", "dog"]
    logits = torch.randn(4, NUM_IMAGENET_CLASSES) * 3
    everything = ZeroShotHead(classes, default_mapping(classes), top_k=NUM_IMAGENET_CLASSES)(logits)
    assert torch.allclose(everything, ZeroShotHead(classes, default_mapping(classes))(logits), atol=1e-6)


def test_it_refuses_a_top_k_outside_the_imagenet_classes():
    with pytest.raises(ValueError, match="top_k"):
        ZeroShotHead(["dog"], default_mapping(["dog"]), top_k=0)
