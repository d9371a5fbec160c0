"""Peer tools the benchmarks compare against, each run in the interpreter that has it installed."""
