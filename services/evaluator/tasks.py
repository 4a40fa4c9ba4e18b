"""DataComp's evaluation suite, read from ``tasks.json`` (the data) into typed, frozen objects.

``tasks.json`` is DataComp's ``tasklist.yml`` and ``aggregate_scores.py`` written as data: 38 scored
tasks, each with its main metric (the headline is their plain mean), the two fairness sets that
have no main metric (FairFace, UTKFace), the four groups (ImageNet, ImageNet dist. shifts, VTAB,
Retrieval) and winnow's own offline sets (``suite: "local"``), which are reported beside the
average and never inside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

TASKS_JSON = Path(__file__).resolve().parent / "tasks.json"

KINDS = ("zeroshot_classification", "retrieval", "association", "wilds", "fairness")
SUITES = ("datacomp", "local")
# What each grouping evaluator computes: after DataComp's eval_utils/wilds_eval.py and fairness_eval.py.
GROUPING_EVALUATORS = ("grouped", "iwildcam", "fmow", "fairface")
DATACOMP_TASK_COUNT = 38


@dataclass(frozen=True)
class Grouping:
    """Per-sample metadata (a ``npy`` member) and how DataComp groups it for WILDS and fairness metrics."""

    evaluator: str
    metadata_fields: tuple[str, ...]
    group_by: tuple[str, ...] = ()
    metric: str = "acc"  # "acc" or "acc_top5", for the "grouped" evaluator


@dataclass(frozen=True)
class Task:
    key: str  # DataComp's task key, e.g. "vtab/cifar100"
    name: str  # DataComp's display name, e.g. "CIFAR-100" (the key of its results file)
    suite: str  # "datacomp" or "local"
    kind: str
    main_metric: str | None  # None: no summary metric (FairFace, UTKFace)
    wds_dir: str  # folder under the data root, in clip_benchmark's webdataset layout
    size: int | None = None
    num_classes: int | None = None
    random_score: float | None = None
    tags: tuple[str, ...] = ()
    hf_dataset: str | None = None  # retrieval and WinoGAViL: the Hugging Face dataset DataComp loads
    grouping: Grouping | None = None

    @property
    def scored(self) -> bool:
        """Whether the task counts in the headline average (DataComp's 38)."""
        return self.suite == "datacomp" and self.main_metric is not None


@dataclass(frozen=True)
class TaskGroup:
    key: str
    title: str
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class TaskSuite:
    tasks: tuple[Task, ...]
    groups: tuple[TaskGroup, ...]
    _index: dict[str, Task] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for task in self.tasks:
            self._index[task.key] = task
            self._index.setdefault(task.name, task)

    @property
    def scored(self) -> tuple[Task, ...]:
        return tuple(t for t in self.tasks if t.scored)

    @property
    def extra(self) -> tuple[Task, ...]:
        """Tasks reported beside the average: winnow's local sets and fairness sets without a main metric."""
        return tuple(t for t in self.tasks if not t.scored)

    def get(self, key_or_name: str) -> Task:
        try:
            return self._index[key_or_name]
        except KeyError:
            raise ValueError(f"unknown evaluation task {key_or_name!r}; known: "
                             f"{', '.join(t.key for t in self.tasks)}") from None

    def select(self, keys_or_names: list[str] | tuple[str, ...] | None) -> tuple[Task, ...]:
        """The named tasks in suite order (all of them for ``None``); ``datacomp`` and ``local`` name suites."""
        if keys_or_names is None:
            return self.tasks
        wanted: set[str] = set()
        for item in keys_or_names:
            if item in SUITES:
                wanted.update(t.key for t in self.tasks if t.suite == item)
            else:
                wanted.add(self.get(item).key)
        return tuple(t for t in self.tasks if t.key in wanted)

    def group_of(self, task: Task) -> list[TaskGroup]:
        return [g for g in self.groups if task.key in g.tasks]


def _task(raw: dict) -> Task:
    unknown = set(raw) - {f for f in Task.__dataclass_fields__}
    if unknown:
        raise ValueError(f"task {raw.get('key')!r}: unknown fields {sorted(unknown)}")
    grouping = raw.get("grouping")
    if grouping is not None:
        grouping = Grouping(evaluator=grouping["evaluator"], metadata_fields=tuple(grouping["metadata_fields"]),
                            group_by=tuple(grouping.get("group_by", ())), metric=grouping.get("metric", "acc"))
    task = Task(**{**raw, "tags": tuple(raw.get("tags", ())), "grouping": grouping})
    if task.kind not in KINDS:
        raise ValueError(f"task {task.key!r}: kind {task.kind!r} is not one of {KINDS}")
    if task.suite not in SUITES:
        raise ValueError(f"task {task.key!r}: suite {task.suite!r} is not one of {SUITES}")
    if task.kind in ("wilds", "fairness") and task.grouping is None:
        raise ValueError(f"task {task.key!r}: {task.kind} tasks need a grouping")
    if task.grouping is not None:
        if task.grouping.evaluator not in GROUPING_EVALUATORS:
            raise ValueError(f"task {task.key!r}: grouping evaluator {task.grouping.evaluator!r} is not one of "
                             f"{GROUPING_EVALUATORS}")
        missing = set(task.grouping.group_by) - set(task.grouping.metadata_fields)
        if missing:
            raise ValueError(f"task {task.key!r}: group_by fields {sorted(missing)} are not metadata fields")
    return task


def parse_suite(document: dict) -> TaskSuite:
    tasks = tuple(_task(raw) for raw in document["tasks"])
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate task keys in the task list")
    groups = tuple(TaskGroup(key=g["key"], title=g["title"], tasks=tuple(g["tasks"])) for g in document["groups"])
    scored = {t.key for t in tasks if t.scored}
    for group in groups:
        outside = set(group.tasks) - scored
        if outside:
            raise ValueError(f"group {group.title!r} names tasks that are not scored: {sorted(outside)}")
    return TaskSuite(tasks=tasks, groups=groups)


@lru_cache(maxsize=1)
def load_suite(path: str | Path = TASKS_JSON) -> TaskSuite:
    """The task suite in ``path`` (default: DataComp's, with winnow's local sets), validated."""
    with open(path, encoding="utf-8") as handle:
        return parse_suite(json.load(handle))
