"""The one per-slide engine and what it stands on: inputs, locks, resume keys, records, devices, merge."""
