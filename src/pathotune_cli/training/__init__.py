"""Training: the loop, precision, schedules, early stopping, checkpoint and resume, metrics."""
