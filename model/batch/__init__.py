"""Batch prediction of files and corpora: the local runner (model/batch/local_runner.py:
streamed, resumable) and the Ray runner (model/batch/ray_runner.py: Ray Data over a
cluster).
"""
