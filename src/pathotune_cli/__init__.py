"""pathotune: prompt-tune frozen pathology foundation models for a lab's own task.

Importing this package imports no torch: heavy modules load inside the functions that need them.
"""

__version__ = "0.1.0"
