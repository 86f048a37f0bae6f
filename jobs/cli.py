"""The plumbing every job shares, so a job file holds only: parse -> spec -> connect -> pool -> write.

    ap = cli.job_parser(__doc__, config_help="sweep YAML (configs/sweep/*.yaml)")
    args = ap.parse_args(argv)
    return cli.run_job(lambda: cli.load_spec(SweepSpec, args.config, cli.parse_set(args.set)),
                       lambda spec: run(spec, Path(args.out)), address=args.address)

Bad input (a missing file, an unknown field, a value out of range) is reported before Ray starts, as
`error: <field>: <message> (allowed: ...)` on stderr with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from actors.common.config import apply_overrides, load_yaml
from actors.common.errors import InputError, from_validation

Spec = TypeVar("Spec")
M = TypeVar("M", bound=BaseModel)

EXIT_BAD_INPUT = 2


def parse_set(values: list[str]) -> dict:
    """`["a.b=3", "c=[1,2]"]` -> {"a.b": 3, "c": [1, 2]}: each value is parsed as YAML."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError("--set", f"{item!r} is not KEY=VALUE", "dotted.key=yaml_value")
        out[key] = load_yaml(value)
    return out


def read_yaml(path: str | Path | None) -> dict:
    """A YAML mapping from `path` ({} for None); a missing or malformed file is an InputError."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise InputError("--config", f"no such file {str(p)!r}", "a readable YAML file")
    try:
        raw = load_yaml(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError("--config", f"{p} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError("--config", f"{p} holds a {type(raw).__name__}, not a mapping", "a YAML mapping")
    return raw


def load_spec(spec_cls: type[M], path: str | Path | None, overrides: dict | None = None) -> M:
    """Read a YAML preset (or defaults when `path` is None), apply dotted overrides, validate.

    Any field of the pydantic spec can be set from the command line; errors name the dotted field.
    """
    raw = apply_overrides(read_yaml(path), overrides)
    try:
        return spec_cls.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(exc) from None


def job_parser(doc: str | None, *, config_help: str | None = None, config_required: bool = True,
               out_help: str = "output directory (reused to resume)", set_example: str = "chunk_size=64",
               address: bool = True) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every job shares: --config, --out, --set, --address."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if config_help is not None:
        ap.add_argument("--config", required=config_required, help=config_help)
    ap.add_argument("--out", required=True, help=out_help)
    if config_help is not None:
        ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help=f"override config fields, e.g. {set_example}")
    if address:
        ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or an embedded cluster)")
    return ap


def fail(exc: BaseException) -> int:
    """Print an input error the way every job does and return exit status 2."""
    print(f"error: {exc}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


def print_json(doc: Any, keys: Iterable[str] | None = None) -> None:
    """The job's summary (or the chosen keys of it) as indented JSON on stdout."""
    if keys is not None:
        doc = {k: doc[k] for k in keys if k in doc}
    print(json.dumps(doc, indent=2, default=str), flush=True)


def run_job(load: Callable[[], Spec], run: Callable[[Spec], Any], *, address: str | None = None,
            ray: bool = True, keys: Iterable[str] | None = None) -> int:
    """load() the spec (before Ray starts), connect when `ray`, run(spec), print its summary.

    InputError (and a pydantic ValidationError) anywhere — in the spec or raised by a Ray worker — ends
    the job with the field and range on stderr and exit 2; other errors propagate with their traceback.
    """
    try:
        spec = load()
        if ray:
            from cluster import connect

            connect(address)
        summary = run(spec)
    except InputError as exc:
        return fail(exc)
    except ValidationError as exc:
        return fail(from_validation(exc))
    if summary is not None:
        print_json(summary, keys)
    return 0
