"""Benchmarks, screenshots and demo builders.

Each module is a command, `python -m bench.NAME`, that prints its numbers and saves
them under bench/results/ with the machine they were measured on.
"""
