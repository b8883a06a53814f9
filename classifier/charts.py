"""Numbers shaped for the model pages: a confusion heatmap's cells, curves as SVG points."""

CHART_W, CHART_H, PAD = 420, 160, 6


def confusion_rows(classes: list[str], matrix: list[list[int]]) -> list[dict]:
    """One row per true class; each cell has its count and a shade (its share of the row)."""
    rows = []
    for i, (label, counts) in enumerate(zip(classes, matrix)):
        total = sum(counts) or 1
        cells = [{"count": n, "shade": round(n / total, 3), "diagonal": i == j} for j, n in enumerate(counts)]
        rows.append({"label": label, "cells": cells})
    return rows


def _points(values: list[float], lo: float, hi: float) -> str:
    if not values:
        return ""
    span = (hi - lo) or 1.0
    step = (CHART_W - 2 * PAD) / max(len(values) - 1, 1)
    return " ".join(f"{PAD + i * step:.1f},{CHART_H - PAD - (v - lo) / span * (CHART_H - 2 * PAD):.1f}"
                    for i, v in enumerate(values))


def _series(name: str, values: list[float], lo: float | None = None, hi: float | None = None) -> dict:
    values = [float(v) for v in values if v is not None]
    lo = min(values, default=0.0) if lo is None else lo
    hi = max(values, default=1.0) if hi is None else hi
    return {"name": name, "points": _points(values, lo, hi), "first": values[0] if values else None,
            "last": values[-1] if values else None, "lo": lo, "hi": hi}


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
