"""The evaluator: DataComp's 38-task zero-shot evaluation of a CLIP model, and winnow's offline sets.

* :mod:`~services.evaluator.tasks` (with ``tasks.json``): the task suite as data;
* :mod:`~services.evaluator.metrics`: accuracy, mean per-class recall, retrieval recall@k, WILDS
  group metrics, Jaccard;
* :mod:`~services.evaluator.zeroshot`, :mod:`~services.evaluator.retrieval`,
  :mod:`~services.evaluator.grouped`, :mod:`~services.evaluator.association`: one kind of task each;
* :mod:`~services.evaluator.evaluate`: ``evaluate(model, data_root, tasks=None) -> Results``;
* :mod:`~services.evaluator.local_sets`: ``winnow eval-data build`` and the openclipart hold-out rule;
* :mod:`~services.evaluator.cli`: ``winnow evaluate`` and ``winnow eval-data``.
"""

from services.evaluator.evaluate import Results, TaskResult, evaluate
from services.evaluator.local_sets import is_eval_holdout
from services.evaluator.tasks import Task, TaskSuite, load_suite

__all__ = ["Results", "Task", "TaskResult", "TaskSuite", "evaluate", "is_eval_holdout", "load_suite"]
