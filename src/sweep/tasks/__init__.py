"""What a model's outputs mean (classify, detect, segment, raw): post-processing as a timed
stage, the correctness check against the fp32 reference, and accuracy on labels."""

from sweep.tasks.base import Task
from sweep.tasks.registry import TASKS, get_task, infer_task

__all__ = ["TASKS", "Task", "get_task", "infer_task"]
