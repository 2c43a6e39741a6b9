"""Every refusal made before anything starts, each ending the run with exit status 2 and a
message that names the key, the value, what is allowed and what to type: a command line value
Hydra would meet first, a bad value in any job of a grid, a reused folder that holds another
sweep. A refused sweep leaves no sweep record and no parent run behind.

(A Hydra callback's exceptions only become warnings, so these end the process themselves.)
"""

from __future__ import annotations

import copy
import difflib
import sys
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from sweep.config import CONTROL_KEYS, FILE_MODEL_KINDS, SweepConfig, from_container, job_values
from sweep.errors import ConfigError, UnsupportedError, config_error
from sweep.redact import redact


def sweep_overrides(config: DictConfig) -> list[str]:
    """The sweeper's `params` (experiments set these), then the command line's overrides, which
    win for the same key (the basic sweeper's order)."""
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()]
    overrides += list(config.hydra.overrides.task)
    return overrides


def job_grid(overrides: list[str]) -> list[list[str]]:
    """Each job's overrides, in the order (and so with the job numbers) the basic sweeper and
    the rounds sweeper give them."""
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    return BasicSweeper.split_arguments(parser.parse_overrides(overrides), None)[0]


# what OmegaConf raises for a key its config does not have (reading it, or setting it)
UNKNOWN_KEY = (ConfigKeyError, ConfigAttributeError)

# the sweepers whose jobs are the grid of their overrides, known before any job starts; an
# optimising sweeper (optuna) draws a trial's values as it starts: a bad one fails that trial
GRID_SWEEPERS = ("RoundsSweeper", "BasicSweeper")


def _key_and_reason(e: Exception, base: Any = None,
                    known: list[str] | None = None) -> tuple[str | None, str]:
    """The config key at fault (when one is known) and a one-line reason; `base`, a composed
    config, gives a wrongly typed key's default as what to type; `known`, the config's keys,
    the ones an unknown key may be a misspelling of."""
    if isinstance(e, ConfigError):
        return e.key, str(e)
    typed = _typed_reason(e, base)
    if typed is not None:
        return typed
    key = getattr(e, "full_key", None) or getattr(e.__cause__, "full_key", None)
    if key and (isinstance(e, UNKNOWN_KEY) or isinstance(e.__cause__, UNKNOWN_KEY)):
        return key, unknown_key(key, None, known or config_keys(base))
    text = f"{type(e).__name__}: {e}" + (f" ({e.__cause__})" if e.__cause__ else "")
    return key, " ".join(text.split()).split(" Config search path")[0]


def job_refusal(config: DictConfig, job_num: Any) -> tuple[str | None, str] | None:
    """Why a composed job config (with its `hydra` node) cannot run, or None: what the job
    itself would raise building its typed config (the key at fault, the reason)."""
    config = copy.deepcopy(config)
    try:
        with read_write(config), open_dict(config):
            del config["hydra"]  # as Hydra hands it to the job
        values = OmegaConf.to_container(config, resolve=True)
        typed = from_container(job_values(values, job_num))
    except Exception as e:
        return _key_and_reason(e, known=config_keys(config))
    return pair_refusal(typed)


def refused_jobs(config: DictConfig, grid: list[list[str]]) -> list[str]:
    """One line per bad value of the grid's jobs: the job numbers, their swept overrides and the
    reason (key, value, what is allowed)."""
    loader = GlobalHydra.instance().config_loader()
    values: dict[str, set[str]] = {}
    for job in grid:
        for override in job:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    swept = {key for key, seen in values.items() if len(seen) > 1}
    by_reason: dict[tuple[str | None, str], list[int]] = {}
    for num, job in enumerate(grid):
        try:
            refusal = job_refusal(loader.load_sweep_config(config, list(job)), num)
        except Exception as e:  # Hydra's composition: an unknown choice, a value of a wrong type
            refusal = _key_and_reason(e, known=config_keys(config))
        if refusal:
            by_reason.setdefault(refusal, []).append(num)
    lines = []
    for (key, reason), nums in by_reason.items():
        shared = set.intersection(*(set(grid[n]) for n in nums))
        which = [o for o in grid[nums[0]] if o in shared and o.partition("=")[0] in swept]
        # the override that set the key at fault, when it is not a swept one
        which += [o for o in grid[nums[0]] if key and o.partition("=")[0].lstrip("+~") == key
                  and o not in which]
        label = f"job {nums[0]}" if len(nums) == 1 else f"jobs {_numbers(nums)}"
        which_text = f" ({' '.join(redact(o) for o in which)})" if which else ""
        lines.append(f"{label}{which_text}: {redact(reason)}")
    return lines


def _numbers(nums: list[int]) -> str:
    """Job numbers with runs shortened: 0-3, 5, 7."""
    runs: list[list[int]] = []
    for n in nums:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


_TYPE_WORDS = (("to Integer", "must be a whole number"), ("to Float", "must be a number"),
               ("valid bool", "must be true or false"))


def _typed_reason(e: Exception, base: Any) -> tuple[str, str] | None:
    """The key and the tool's one-line reason for what Hydra's composition rejects: a value of
    the wrong type (key, value, what is allowed, the key's default in `base` as what to type)
    or an unknown group choice (the choices there are). None for anything else."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ValidationError

    cause = e.__cause__
    if isinstance(cause, ValidationError) and cause.full_key:
        key, msg = cause.full_key, str(cause.msg)
        allowed = next((w for k, w in _TYPE_WORDS if k in msg), msg.splitlines()[0])
        default = OmegaConf.select(base, key) if base is not None else None
        if isinstance(default, bool):
            default = str(default).lower()
        hint = f"e.g. {key}={default}" if default is not None else ""
        return key, str(config_error(key, cause.value, allowed, hint))
    if isinstance(e, MissingConfigException) and "Available options in '" in str(e):
        text = str(e)
        group, rest = text.split("Available options in '", 1)[1].split("':", 1)
        options = rest.split("Config search path")[0].split()
        value = text.split(f"'{group}/", 1)[1].split("'", 1)[0] if f"'{group}/" in text else "?"
        return group, str(config_error(group, value, f"one of {', '.join(options)}",
                                       choice_hint(group, value, options)))
    return None


CLI_FLAGS = ("-m", "--multirun")  # anything else (--cfg, -cn NAME, --help): Hydra's own way


def check_command_line(args: list[str]) -> None:
    """Compose the command line's plain (unswept) overrides before Hydra does: Hydra composes
    them ahead of any callback, so a value of the wrong type (batch=abc) or an unknown choice
    would end the run with its own message and exit status 1. Refused here like every other
    bad value (exit 2); the swept values are checked per job by check_grid."""
    if any(a.startswith("-") and a not in CLI_FLAGS for a in args):
        return
    args = [a for a in args if not a.startswith("-")]
    from hydra import compose, initialize_config_dir

    from sweep.config import register_configs
    from sweep.paths import conf_dir

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:  # noqa: BLE001 - a syntax error: Hydra says what is wrong
        return
    plain = [o for o in parsed
             if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    if not plain:
        return
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        try:
            compose("config", overrides=[o.input_line for o in plain])
            return
        except Exception as e:  # noqa: BLE001 - told apart below
            error = e
        key = getattr(error.__cause__, "full_key", None)
        try:  # the same choices without the value at fault: its default, as what to type
            base = compose("config", overrides=[o.input_line for o in plain
                                                if o.key_or_group != key])
        except Exception:  # noqa: BLE001 - no default to show
            base = None
    typed = _typed_reason(error, base)
    if typed is None and isinstance(error.__cause__, UNKNOWN_KEY) and key:
        value = next((o.get_value_element_as_str() for o in plain if o.key_or_group == key), None)
        typed = key, unknown_key(key, value, config_keys(base))
    if typed is not None:
        refuse([redact(typed[1])], 1)


# --- did you mean: a misspelt key or group choice --------------------------------------------


def config_keys(config: Any) -> list[str]:
    """Every key of a composed config (`hydra` left out), dotted, its groups' nodes too: what
    a misspelt key is matched against."""
    if config is None:
        return []
    data = OmegaConf.to_container(config, resolve=False) if OmegaConf.is_config(config) \
        else config
    keys: list[str] = []

    def walk(node: dict, prefix: str) -> None:
        for name, value in node.items():
            if name == "hydra" and not prefix:
                continue
            keys.append(f"{prefix}{name}")
            if isinstance(value, dict):
                walk(value, f"{prefix}{name}.")

    walk(data, "")
    return keys


def _closest(word: str, choices: list[str]) -> list[str]:
    return difflib.get_close_matches(word, choices, n=3, cutoff=0.6)


def unknown_key(key: str, value: str | None, known: list[str]) -> str:
    """The reason a key the config lacks is refused: the known keys it is closest to (difflib),
    with the value, as what to type; else how to list every key."""
    close = _closest(key, [k for k in known if k != key])
    if not close:
        return (f"{key} is not a key of this config: drop it, or check its spelling "
                "(python -m sweep --cfg job shows every key)")
    typed = f"{close[0]}={value}" if value is not None else close[0]
    return (f"{key} is not a key of this config: did you mean {typed}? "
            "(python -m sweep --cfg job shows every key)")


def choice_hint(group: str, value: str, options: list[str]) -> str:
    """What to type for an unknown choice of a config group: the closest option (difflib),
    else its first."""
    close = _closest(value, options)
    if close:
        return f"Did you mean {group}={close[0]}?"
    return f"e.g. {group}={options[0]}" if options else ""


# --- pairs a job would fail on in its first seconds ------------------------------------------


def pair_refusal(cfg: SweepConfig) -> tuple[str | None, str] | None:
    """The key and reason a typed job config cannot run, found without building anything: a
    runtime that cannot run the model's kind, a model file that is not there, a model name
    its library does not have (the checks the job itself makes, made before it starts)."""
    for check in (_runtime_runs_model, _model_file_exists, _model_name_exists):
        try:
            check(cfg)
        except ConfigError as e:
            return e.key, str(e)
        except UnsupportedError as e:
            return "runtime", str(e)
    return None


def _runtime_runs_model(cfg: SweepConfig) -> None:
    from sweep.runtimes import check_model  # torch: only once the config itself is valid

    check_model(cfg.runtime, cfg.model.kind)


def _model_file_exists(cfg: SweepConfig) -> None:
    suffix = FILE_MODEL_KINDS.get(cfg.model.kind)
    if suffix and cfg.model.path and not Path(cfg.model.path).expanduser().is_file():
        raise config_error("model.path", cfg.model.path, "no such file",
                           f"Give the path of a model={cfg.model.kind} file ({suffix}), "
                           "relative to where you run python -m sweep.")


def _model_name_exists(cfg: SweepConfig) -> None:
    if cfg.model.kind in ("torchvision", "timm"):
        from sweep.models import check_name  # torchvision's or timm's registry, no model built

        check_name(cfg.model)


def refuse(lines: list[str], jobs: int) -> None:
    """End the run before anything starts, exit status 2 (a callback's exceptions would only
    become warnings in Hydra)."""
    head = (f"error: {len(lines)} bad value(s) in the config of this sweep's {jobs} jobs; no job "
            "was started:" if jobs > 1 else "error: the config has a bad value; the job was not "
            "started:")
    print("\n  ".join([head, *lines]) + "\nFix the value(s) named and run the same command "
          "again.", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _measured_values(overrides: list[str]) -> dict[str, set[str]]:
    """What a sweep's overrides measure: each key's values, without the keys that only say how
    jobs run (CONTROL_KEYS, hydra.*)."""
    out: dict[str, set[str]] = {}
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.get_key_element().lstrip("+~")
        if key.split(".")[0] in CONTROL_KEYS or key.startswith("hydra"):
            continue
        try:
            values = (list(o.sweep_string_iterator()) if o.is_sweep_override()
                      else [o.get_value_element_as_str()])
        except Exception:  # a search space (interval) is not a list of values: compare its text
            values = [str(o.value())]
        out[key] = set(values)
    return out


def foreign_sweep(recorded: list[str], overrides: list[str]) -> str | None:
    """Why a folder whose sweep file recorded `recorded` holds a different sweep than
    `overrides`, or None when `overrides` is the same grid or grows it (more values)."""
    old, new = _measured_values(recorded), _measured_values(overrides)
    if old.keys() != new.keys():
        return f"it sweeps {sorted(old)}, this run {sorted(new)}"
    for key in old:
        if not old[key] <= new[key]:
            return (f"it ran {key}={','.join(sorted(old[key]))}, this run "
                    f"{key}={','.join(sorted(new[key]))}")
    return None


def planned_grid(config: DictConfig, overrides: list[str]) -> list[list[str]] | None:
    """Each job's overrides when the sweep is a grid known before it starts; None for an
    optimising sweeper (its trials are drawn as they start) or a search space of another one."""
    if OmegaConf.select(config, "hydra.sweeper.n_trials"):
        return None
    try:
        return job_grid(overrides)
    except Exception:  # a search space (an interval) of another sweeper: not a grid
        return None


def check_grid(config: DictConfig, grid: list[list[str]] | None) -> None:
    """Refuse (exit 2) a grid sweeper's sweep when any of its jobs has a bad value, before
    anything is made: a fixed command re-run into the same folder is then no foreign sweep."""
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_") or "")
    if OmegaConf.select(config, "hydra.sweeper.n_trials", default=None) is not None:
        check_search(config)  # an optimising sweeper (optuna)
    if grid and sweeper.rsplit(".", 1)[-1] in GRID_SWEEPERS:
        if refused := refused_jobs(config, grid):
            refuse(refused, len(grid))


def check_job(config: DictConfig) -> None:
    """Refuse (exit 2) one job's config (with its `hydra` node) before Hydra makes its folder."""
    refusal = job_refusal(config, None)
    if refusal:
        refuse([redact(refusal[1])], 1)


def refuse_foreign(sweep_dir: Path, why: str) -> None:
    """End the multirun (exit 2): `sweep_dir` holds another sweep (`why`, from foreign_sweep)."""
    print(f"error: hydra.sweep.dir={sweep_dir} holds a different sweep ({why}); its "
          "results would be mixed with this one's and its parent run reused. Use a new "
          "folder, or add reuse_dir=true to run into it anyway (a new parent run; job "
          "folders of other configs are overwritten).", file=sys.stderr, flush=True)
    raise SystemExit(2)


# --- an optimising sweeper's search (hydra/sweeper=optuna) ---------------------------------


def check_search(config: DictConfig) -> None:
    """Refuse (exit 2) an optimising sweeper's search before anything starts: its own settings
    out of range, a search-space value Hydra cannot compose (it would abort the whole search at
    its trial, e.g. a float interval on a whole-number key) and a re-run into a folder whose
    trials it would not draw again (no fixed sampler seed, or another one)."""
    lines = _search_settings(config) + _search_space(config)
    if not lines:
        lines = _search_resume(config)
    if lines:
        print("\n  ".join(["error: this search cannot start; no trial was run:", *lines])
              + "\nFix what is named and run the same command again.", file=sys.stderr,
              flush=True)
        raise SystemExit(2)


def _search_settings(config: DictConfig) -> list[str]:
    sweeper = config.hydra.sweeper
    lines = []
    for key, low in (("n_trials", 1), ("n_jobs", 1)):
        value = OmegaConf.select(sweeper, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            lines.append(str(config_error(f"hydra.sweeper.{key}", value,
                                          f"a whole number >= {low}",
                                          f"e.g. hydra.sweeper.{key}=20" if key == "n_trials"
                                          else "e.g. hydra.sweeper.n_jobs=1")))
    rate = OmegaConf.select(sweeper, "max_failure_rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        lines.append(str(config_error("hydra.sweeper.max_failure_rate", rate,
                                      "a fraction of the trials, 0.0 to 1.0",
                                      "e.g. hydra.sweeper.max_failure_rate=1.0 (go on past "
                                      "every failed trial)")))
    direction = OmegaConf.select(sweeper, "direction")
    directions = list(direction) if OmegaConf.is_list(direction) else [direction]
    if any(str(getattr(d, "name", d)) not in ("minimize", "maximize") for d in directions):
        lines.append(str(config_error("hydra.sweeper.direction", str(direction),
                                      "minimize or maximize",
                                      "e.g. hydra.sweeper.direction=maximize (the objective "
                                      "is max_qps_at_slo or fps)")))
    return lines


def _probe_values(override: Any) -> list[Any]:
    """Values a search-space override can draw that show a type Hydra refuses: a choice's or
    a range's every value, an interval's ends and a point between them (fractional, unless the
    interval is cast to int)."""
    from hydra.core.override_parser.types import IntervalSweep

    value = override.value()
    if isinstance(value, IntervalSweep):
        start, end = value.start, value.end
        between = start + (end - start) * 0.37
        return [start, end, between if isinstance(start, float) else round(between)]
    return list(override.sweep_iterator())[:64]


def _search_space(config: DictConfig) -> list[str]:
    """One line per search-space value Hydra would refuse to compose into a trial."""
    loader = GlobalHydra.instance().config_loader()
    try:
        parsed = OverridesParser.create().parse_overrides(sweep_overrides(config))
    except Exception:  # noqa: BLE001 - a syntax error: Hydra says what is wrong
        return []
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    space = {o.get_key_element(): (o, _probe_values(o)) for o in parsed
             if o.is_sweep_override()}
    lines = []
    for key, (override, values) in space.items():
        for value in values:  # each key alone: the others at their defaults
            try:
                loader.load_sweep_config(config, [*fixed, f"{key}={value}"])
            except Exception as e:  # noqa: BLE001 - Hydra's composition: named below
                reason = _key_and_reason(e)[1].rstrip(".")
                if "interval(" in override.input_line and isinstance(value, float):
                    space_text = override.input_line.split("=", 1)[1]
                    reason += (f"; an interval draws fractional values: for a whole-number "
                               f"key type '{key}=int({space_text})'")
                lines.append(f"{override.input_line}: {redact(reason)}")
                break
    return lines


def _search_resume(config: DictConfig) -> list[str]:
    """A re-run into a folder that holds a search redraws its trials only with the same fixed
    sampler seed: without one (or with another) new trials would join the old ones' report."""
    import yaml

    sweep_dir = Path(str(config.hydra.sweep.dir))
    if OmegaConf.select(config, "reuse_dir") or not any(sweep_dir.glob("*/result.json")):
        return []
    if OmegaConf.select(config, "hydra.sweeper.sampler", default=None) is None or \
            "seed" not in config.hydra.sweeper.sampler:
        return []  # a sampler without a seed (a grid sampler): its trials are its space
    seed = config.hydra.sweeper.sampler.seed
    before = None
    for path in sorted(sweep_dir.glob("*/.hydra/hydra.yaml")):  # each trial's hydra config
        try:
            ran = yaml.safe_load(path.read_text())["hydra"]["sweeper"]["sampler"]
            before = ran.get("seed")
            break
        except Exception:  # noqa: BLE001 - no readable record of its seed: said below
            continue
    if seed is not None and seed == before:
        return []
    ran_with = (f"it ran with hydra.sweeper.sampler.seed={before}: add that to this command"
                if before is not None else "its trials were drawn without a fixed seed and "
                "cannot be drawn again: use a new hydra.sweep.dir")
    this = f"this run's seed is {seed}" if seed is not None else "this run sets no seed"
    return [f"hydra.sweep.dir={sweep_dir} holds a search whose trials this one would not draw "
            f"again ({this}), so new trials would be mixed with its old ones; {ran_with}, or "
            "add reuse_dir=true to run into it anyway"]
