"""Qlib workflows: train/valid/test segments, running ``qrun`` on a workflow YAML, the records a
run adds to Qlib's, and reading a finished run back through mlflow.

A new Qlib record (a metric logged by every ``qrun`` run) goes in :mod:`storm_bt.workflows.records`.
"""

from storm_bt.workflows.segments import Segments

__all__ = ["Segments"]
