"""Machine learning for animalsite: plain Python and torch, no Django.

Everything here takes paths, images and dataclasses and returns dataclasses, so it runs
as `python -m classifier.ml.<module>` on a machine that has no database at all.
"""
