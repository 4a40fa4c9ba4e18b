"""The evaluator: DataComp's 38-task zero-shot evaluation of a CLIP model, and winnow's offline sets.

* :mod:`~winnow.services.evaluator.tasks` (with ``tasks.json``): the task suite as data;
* :mod:`~winnow.services.evaluator.metrics`: accuracy, mean per-class recall, retrieval recall@k, WILDS
  group metrics, Jaccard;
* :mod:`~winnow.services.evaluator.zeroshot`, :mod:`~winnow.services.evaluator.retrieval`,
  :mod:`~winnow.services.evaluator.grouped`, :mod:`~winnow.services.evaluator.association`: one kind of task each;
* :mod:`~winnow.services.evaluator.evaluate`: ``evaluate(model, data_root, tasks=None) -> Results``;
* :mod:`~winnow.services.evaluator.local_sets`: ``winnow eval-data build`` and the openclipart hold-out rule;
* :mod:`~winnow.services.evaluator.cli`: ``winnow evaluate`` and ``winnow eval-data``.
"""

from winnow.services.evaluator.evaluate import Results, TaskResult, evaluate
from winnow.services.evaluator.local_sets import is_eval_holdout
from winnow.services.evaluator.tasks import Task, TaskSuite, load_suite

__all__ = ["Results", "Task", "TaskResult", "TaskSuite", "evaluate", "is_eval_holdout", "load_suite"]
