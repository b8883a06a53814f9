"""Training curves for the model page (classifier.charts): labels readable at any scale, epochs aligned."""

from classifier.charts import CHART_W, PAD, training_curves


def xs(points: str) -> list[float]:
    return [float(p.split(",")[0]) for p in points.split()]


def test_tiny_validation_nll_is_labelled_with_significant_digits():
    history = [{"weight_decay": wd, "val_nll": nll, "val_accuracy": 1.0}
               for wd, nll in ((0.3, 4.07e-4), (0.1, 1.55e-5), (0.03, 4.29e-6))]
    nll = training_curves("head", history)["series"][0]
    assert (nll["first"], nll["last"], nll["lo"], nll["hi"]) == ("0.000407", "4.29e-06", "4.29e-06", "0.000407")


def test_a_series_with_a_gap_keeps_each_point_at_its_epoch():
    # LP-FT's epoch 0 is the linear probe: validation metrics, no training loss.
    history = [{"epoch": 0, "val_macro_f1": 0.95, "val_accuracy": 0.96}] + [
        {"epoch": e, "train_loss": 1.0 / e, "val_macro_f1": 0.94, "val_accuracy": 0.95} for e in (1, 2, 3)]
    loss, f1, _ = training_curves("finetune", history)["series"]
    step = (CHART_W - 2 * PAD) / 3
    assert xs(f1["points"]) == [round(PAD + i * step, 1) for i in range(4)]
    assert xs(loss["points"]) == xs(f1["points"])[1:]
    assert loss["first"] == "1" and loss["last"] == "0.333"
