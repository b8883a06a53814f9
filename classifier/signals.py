"""Signals other apps listen to without classifier importing them (labeling keeps the data
browser's summary rows current through these)."""

from django.dispatch import Signal

# Sent by predictions.predictions_write after its bulk insert (bulk_create sends no post_save):
# kwargs version (ModelVersion), image_ids (list[int]).
predictions_written = Signal()
