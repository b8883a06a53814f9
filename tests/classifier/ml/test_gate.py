"""The promotion gate on label lists: a better, a worse and a mixed challenger."""

from classifier.ml.gate import compare

TRUTH = ["cat"] * 10 + ["dog"] * 10 + ["emu"] * 10


def with_errors(errors: dict[str, int]) -> list[str]:
    """TRUTH with the first n images of each named class predicted as "other"."""
    predicted, seen = [], {}
    for label in TRUTH:
        seen[label] = seen.get(label, 0) + 1
        predicted.append("other" if seen[label] <= errors.get(label, 0) else label)
    return predicted


def test_it_promotes_a_challenger_that_is_better_everywhere():
    result = compare(TRUTH, with_errors({"cat": 3, "dog": 3}), with_errors({"cat": 1}))
    assert result.promote
    assert result.challenger_macro_f1 > result.champion_macro_f1
    assert "beats" in result.reason


def test_it_keeps_the_champion_against_a_worse_challenger():
    result = compare(TRUTH, with_errors({"cat": 1}), with_errors({"cat": 3, "dog": 3}))
    assert not result.promote
    assert "dropped" in result.reason and "cat" in result.reason and "dog" in result.reason


def test_it_refuses_a_mixed_challenger_that_is_better_on_average_but_drops_one_class():
    # Much better on dog and emu, but cat loses more F1 than the margin allows.
    champion = with_errors({"cat": 0, "dog": 5, "emu": 5})
    challenger = with_errors({"cat": 2})
    result = compare(TRUTH, champion, challenger, max_class_drop=0.02)
    assert result.challenger_macro_f1 > result.champion_macro_f1
    assert not result.promote
    assert "cat" in result.reason
    assert [c.label for c in result.per_class if c.delta < -0.02] == ["cat"]
    # With a looser margin the same challenger passes.
    assert compare(TRUTH, champion, challenger, max_class_drop=0.2).promote


def test_it_does_not_promote_a_tie():
    same = with_errors({"dog": 2})
    result = compare(TRUTH, same, same)
    assert not result.promote and "does not beat" in result.reason


def test_it_refuses_when_the_test_split_is_too_small():
    result = compare(TRUTH[:3], ["other"] * 3, TRUTH[:3], min_images=10)
    assert not result.promote and "only 3 test images" in result.reason


def test_its_verdict_is_plain_json_data():
    data = compare(TRUTH, with_errors({"cat": 3}), TRUTH).to_dict()
    assert data["promote"] is True
    assert {row["label"] for row in data["per_class"]} == {"cat", "dog", "emu"}
    assert next(r for r in data["per_class"] if r["label"] == "cat")["delta"] > 0


def test_a_class_with_few_test_images_cannot_veto_alone():
    # "ant" has two test images; the challenger misses one of them (F1 1.0 -> 0.667) but is far
    # better on the other classes. One image is noise, not a regression.
    truth = TRUTH + ["ant", "ant"]
    champion = with_errors({"cat": 5, "dog": 5, "emu": 5}) + ["ant", "ant"]
    challenger = TRUTH + ["ant", "other"]
    result = compare(truth, champion, challenger, max_class_drop=0.02, min_class_support=10)
    assert result.promote
    ant = next(c for c in result.per_class if c.label == "ant")
    assert ant.delta < -0.3 and not ant.checked
    assert "fewer than 10 test images" in result.reason and "veto only a drop over 0.50" in result.reason
    assert next(r for r in result.to_dict()["per_class"] if r["label"] == "ant")["checked"] is False
    # Counted per class without the support rule, the same image vetoes the promotion.
    assert not compare(truth, champion, challenger, max_class_drop=0.02, min_class_support=1).promote


def test_a_small_class_that_is_all_but_lost_still_vetoes():
    # Both "ant" images go elsewhere: F1 1.0 -> 0.0 is no noise, however small the class.
    truth = TRUTH + ["ant", "ant"]
    champion = with_errors({"cat": 5, "dog": 5, "emu": 5}) + ["ant", "ant"]
    challenger = TRUTH + ["other", "other"]
    result = compare(truth, champion, challenger, max_class_drop=0.02, min_class_support=10)
    assert result.challenger_macro_f1 > result.champion_macro_f1
    assert not result.promote and "ant 1.000→0.000" in result.reason and "vetoes a drop over 0.50" in result.reason


def test_a_class_with_enough_test_images_still_vetoes():
    champion = with_errors({"dog": 5, "emu": 5})
    challenger = with_errors({"cat": 2})
    result = compare(TRUTH, champion, challenger, max_class_drop=0.02, min_class_support=10)
    assert not result.promote and "cat" in result.reason


def test_it_refuses_a_challenger_that_stops_serving_a_class_whatever_its_scores():
    result = compare(TRUTH, with_errors({"cat": 5, "dog": 5}), TRUTH, champion_serves={"cat", "dog", "emu", "other"},
                     challenger_serves={"cat", "dog", "other"})
    assert result.challenger_macro_f1 > result.champion_macro_f1
    assert not result.promote and result.coverage_lost == ["emu"]
    assert "stop serving emu" in result.reason


def test_it_scores_every_class_in_the_truth_however_few_its_images():
    truth = TRUTH + ["okapi"]  # one label: below any training minimum, still scored
    result = compare(truth, with_errors({}) + ["other"], with_errors({}) + ["okapi"])
    assert [c.label for c in result.per_class] == ["cat", "dog", "emu", "okapi"]
    assert next(c for c in result.per_class if c.label == "okapi").challenger_f1 == 1.0


def test_with_a_paired_test_it_keeps_the_champion_when_the_split_cannot_tell_them_apart():
    # Three more right answers in 30 images: macro-F1 is higher, but p = 1/8 by McNemar's exact test.
    champion, challenger = with_errors({"cat": 3}), TRUTH
    assert compare(TRUTH, champion, challenger).promote  # without the test, as before
    result = compare(TRUTH, champion, challenger, significance=0.05)
    assert not result.promote and "tell apart" in result.reason
    assert (result.champion_only, result.challenger_only) == (0, 3) and result.p_value == 0.125
    # Five more right answers is beyond chance (p = 1/32).
    assert compare(TRUTH, with_errors({"cat": 5}), TRUTH, significance=0.05).promote
