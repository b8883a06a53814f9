"""Numbers shaped for the model pages: a confusion heatmap's cells, curves as SVG points."""

CHART_W, CHART_H, PAD = 420, 160, 6


def confusion_rows(classes: list[str], matrix: list[list[int]]) -> list[dict]:
    """One row per true class; each cell has its count and a shade (its share of the row)."""
    rows = []
    for i, (label, counts) in enumerate(zip(classes, matrix)):
        total = sum(counts) or 1
        cells = [{"count": n, "shade": round(n / total, 3), "diagonal": i == j, "predicted": classes[j]}
                 for j, n in enumerate(counts)]
        rows.append({"label": label, "cells": cells})
    return rows


def _points(values: list[float | None], lo: float, hi: float) -> str:
    """x by position in values, so series with gaps (no training loss at LP-FT's epoch 0) line up."""
    span = (hi - lo) or 1.0
    step = (CHART_W - 2 * PAD) / max(len(values) - 1, 1)
    return " ".join(f"{PAD + i * step:.1f},{CHART_H - PAD - (v - lo) / span * (CHART_H - 2 * PAD):.1f}"
                    for i, v in enumerate(values) if v is not None)


def _label(value: float | None) -> str:
    # Three significant digits: a validation NLL can be 0.0004, which fixed decimals show as 0.
    return "" if value is None else f"{value:.3g}"


def _series(name: str, values: list[float | None], lo: float | None = None, hi: float | None = None) -> dict:
    values = [None if v is None else float(v) for v in values]
    present = [v for v in values if v is not None]
    lo = min(present, default=0.0) if lo is None else lo
    hi = max(present, default=1.0) if hi is None else hi
    first, last = (present[0], present[-1]) if present else (None, None)
    return {"name": name, "points": _points(values, lo, hi), "first": _label(first), "last": _label(last),
            "lo": _label(lo), "hi": _label(hi)}


def training_curves(kind: str, history: list[dict]) -> dict | None:
    """finetune: loss and validation metrics per epoch; head: validation metrics per weight decay tried."""
    if not history:
        return None
    if kind == "finetune":
        return {"x": "epoch", "width": CHART_W, "height": CHART_H, "series": [
            _series("train loss", [r.get("train_loss") for r in history]),
            _series("val macro-F1", [r.get("val_macro_f1") for r in history], 0.0, 1.0),
            _series("val accuracy", [r.get("val_accuracy") for r in history], 0.0, 1.0),
        ]}
    return {"x": "weight decay tried, strongest first", "width": CHART_W, "height": CHART_H, "series": [
        _series("val NLL", [r.get("val_nll") for r in history]),
        _series("val accuracy", [r.get("val_accuracy") for r in history], 0.0, 1.0),
    ]}
