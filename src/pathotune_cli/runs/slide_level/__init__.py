"""Slide-level tasks (MIL): the tune, eval and predict strategies behind the same steps as tile level."""
