"""What a task is: one short declaration. The task type owns featuriser, head and predictions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

ROLES = ("intermediate", "target", "probe")


@dataclass(frozen=True)
class Task:
    name: str
    type: str  # a module in stilts.tasktypes: classification, multiple_choice, ...
    metric: str  # a function in stilts.metrics; its value is the major score
    format: str = "jsonl"  # a reader in stilts.readers
    files: dict[str, str] = field(default_factory=dict)  # split -> path under raw_dir/<task>/
    fields: dict = field(default_factory=dict)  # record field -> column/key in the source rows
    labels: tuple[str, ...] = ()  # empty for multiple choice (label = choice index)
    convert: Callable[[dict], dict | list[dict] | None] | None = None  # source row -> record row(s); None skips
    hub: str | None = None  # "path[/config]@revision" for datasets.load_dataset when online
    hub_splits: dict[str, str] = field(default_factory=dict)  # our split -> hub split
    hub_fields: dict = field(default_factory=dict)  # `fields` entries that differ in the hub's rows
    generator: str | None = None  # a function in stilts.generate.suite (generated tasks)
    family: str = ""
    roles: tuple[str, ...] = ROLES  # where the paper uses it (documentation, `stilts tasks`)
    licence_note: str = ""  # bring-your-own data, etc.
    train_size: int = 0  # official split sizes, for `stilts plan` before the data is prepared
    dev_size: int = 0
    description: str = ""
    declared_in: str = ""  # the task file (tasks/<name>.yaml) of a task declared in the project, else ""

    @property
    def num_labels(self) -> int:
        return len(self.labels)
