"""Every number is bounded, and NaN is not a number: each numeric key of every schema refuses
nan, inf and a value past its range with its key, value and range; from the command line, before
anything starts (exit 2)."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
from conftest import run_cli

from sweep import config as c
from sweep.errors import ConfigError


def numeric_fields() -> list[tuple[type, str, str, type]]:
    """(schema, field, flat key, type) of every int or float option, choices included."""
    out = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if dataclasses.is_dataclass(kind):
                walk(kind, f"{prefix}{f.name}.")
                continue
            if typing.get_origin(kind) in (list, dict):
                continue
            args = set(typing.get_args(kind)) or {kind}
            number = args & {int, float}
            if number:
                out.append((cls, f.name, f"{prefix}{f.name}", float if float in number else int))

    walk(c.SweepConfig, "")
    for family, group in ((c.RuntimeConfig, "runtime"), (c.PipelineConfig, "pipeline"),
                          (c.ScenarioConfig, "scenario")):
        # in a fixed order: pytest-xdist's workers must collect the same list
        for schema in sorted(set(family.choices.values()), key=lambda k: k.__name__):
            walk(schema, f"{group}.")
    return out


FIELDS = numeric_fields()


def test_every_numeric_key_has_a_range():
    assert {key for _, _, key, _ in FIELDS} <= set(c.BOUNDS)
    assert len(FIELDS) > 40


@pytest.mark.parametrize(("schema", "name", "key", "kind"), FIELDS,
                         ids=[f"{s.__name__}.{n}" for s, n, _, _ in FIELDS])
def test_nan_inf_and_huge_values_are_refused(schema, name, key, kind):
    high = c.BOUNDS[key][1]
    bad = [math.nan, math.inf, -math.inf, high * 10 + 1] if kind is float else [int(high) * 10 + 1]
    for value in bad:
        if schema is c.SweepConfig:
            make = lambda v: c.SweepConfig(runtime=c.TorchRuntimeConfig(), **{name: v})  # noqa: E731
        else:
            make = lambda v: schema(**{name: v})  # noqa: E731
        with pytest.raises(ConfigError) as e:
            make(value)
        assert str(e.value).startswith(f"{key}=") and "is not valid:" in str(e.value), str(e.value)


def test_a_load_step_is_bounded():
    with pytest.raises(ConfigError, match="at most 10,000,000 requests"):
        c.ServerScenarioConfig(target_qps=1e6, duration_s=60)


@pytest.mark.parametrize("override", ["bench.min_seconds=nan", "timeout_s=nan",
                                      "bench.rounds=1000000000", "scenario=server",
                                      "bench.min_seconds=inf"])
def test_bad_numbers_end_the_run_before_it_starts(tmp_path, cache_dir, override):
    args = [override, "tracking.enabled=false"]
    if override == "scenario=server":
        args.append("scenario.target_qps=1e9")
    proc = run_cli(args, tmp_path, cache_dir, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    key = "scenario.target_qps" if override == "scenario=server" else override.split("=")[0]
    assert f"{key}=" in proc.stderr and "must be" in proc.stderr
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*.json"))
