"""Annotations and the review queue live here (issue 3); this app depends on classifier."""
