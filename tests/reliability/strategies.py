"""Hypothesis strategies for every route, derived from the route itself (its pydantic request model, or
its query / path parameters) plus the route's one valid request (tests/reliability/routes.py).

A route's strategy mixes:
- typed: a whole body generated from the request model (every field from its annotation: numbers near
  and beyond their bounds, Literals and junk strings, nested models, unions, lists, dicts);
- field: the valid request with one top-level field replaced by a typed value of that field;
- mutate: the valid request with one node anywhere in it (a table cell, a series element, a nested
  setting) replaced by a value of the same JSON type or by junk, deleted, or given an extra key;
- raw: bytes that are not the body the route expects (junk JSON, empty, a scalar, deep nesting,
  invalid UTF-8, a body far over every limit, the wrong content type).
Junk covers wrong types, NaN / Infinity / 1e400 literals, huge integers, empty and oversized strings
and containers, unicode and control characters, missing and extra fields.

`NoStrategy` is raised for an annotation nothing here can generate: the fuzz test then fails for that
route instead of skipping it.
"""
from __future__ import annotations

import copy
import math
import types
import typing
from typing import Any

import annotated_types as at
from fastapi.routing import APIRoute
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .routes import BIG_INT, HUGE, NEG_HUGE, NO_BODY, Request

__all__ = ["NoStrategy", "route_strategy", "fixed_battery", "find_route"]


class NoStrategy(TypeError):
    """An annotation (or a route shape) with no strategy: add one here."""


# ---- junk ---------------------------------------------------------------------------------------------
UNICODE = ["é", "Ω≈ç√∫", "🚀🔥", "\u0000", "\u202e", "\ud7ff", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", " ", "\t\n", "%s%n", "../../etc/passwd",
           "/etc/passwd", "NaN", "Infinity", "1e309", "-0", "0x10", "true", "null", "{}", "[]"]
JUNK_SCALARS = [None, True, False, 0, -1, 1, 2**31, 2**63, -2**63 - 1, 2**64, 10**30, 1e308, -1e308, 5e-324,
                math.nan, math.inf, -math.inf, HUGE, NEG_HUGE, BIG_INT, "", "x" * 5000, *UNICODE]
JUNK_CONTAINERS = [[], {}, [None], [[]], {"": None}, {"é": 1}, [math.nan] * 3, list(range(5000)),
                   {f"k{i}": i for i in range(300)}]
# strings a parser or a name lookup must refuse quickly (inline model equations, column and model names)
HOSTILE = ["__import__('os').system('true')", "x.__class__.__mro__", "lambda: 1", "exec('1')", "x**9**9**9",
           "exp(exp(exp(exp(1000))))", "(" * 2000 + "x" + ")" * 2000, "9" * 5000, "1/0", "0**-1", "log(0)",
           "sqrt(-1)", "x;y", "x\n+y", "Max(" + "x," * 2000 + "x)", "E**1e308", "x" * 70, "oo", "zoo", "nan",
           "I", "Symbol('y')", "Integer(10)**Integer(10)**Integer(10)", "x > 1", "{x}", "x if x else y"]
junk = st.sampled_from(JUNK_SCALARS + JUNK_CONTAINERS + HOSTILE)
text = st.one_of(st.text(max_size=12), st.sampled_from(UNICODE + HOSTILE))


def json_values(depth: int = 2) -> st.SearchStrategy:
    """Any JSON value (bounded size), non-finite floats and the marker literals included."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), text, junk)
    if depth <= 0:
        return scalars
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(text, inner, max_size=4)),
                        max_leaves=8)


# ---- typed values from annotations -------------------------------------------------------------------
def _bounds(metadata: list) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in metadata:
        if isinstance(m, at.Ge | at.Gt):
            lo = m.ge if isinstance(m, at.Ge) else m.gt
        if isinstance(m, at.Le | at.Lt):
            hi = m.le if isinstance(m, at.Le) else m.lt
        if isinstance(m, at.Interval):
            lo = m.ge if m.ge is not None else m.gt
            hi = m.le if m.le is not None else m.lt
    return lo, hi


def _numbers(kind: type, metadata: list) -> st.SearchStrategy:
    """Numbers of `kind` inside, on and just beyond the field's bounds, plus extreme values."""
    lo, hi = _bounds(metadata)
    edges: list[Any] = [0, 1, -1]
    for b in (lo, hi):
        if b is not None:
            edges += [b, b - 1, b + 1] if kind is int else [b, math.nextafter(b, -math.inf), math.nextafter(b, math.inf)]
    if kind is int:
        inside = st.integers(min_value=None if lo is None else int(lo), max_value=None if hi is None else int(hi))
        edges += [2**31, 2**53 + 1, 2**63, -2**63 - 1, 10**30]
        return st.one_of(inside, st.sampled_from(edges), st.integers())
    inside = st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)
    edges += [1e308, -1e308, 5e-324, 1e-300, math.nan, math.inf, -math.inf, HUGE, NEG_HUGE]
    return st.one_of(inside, st.sampled_from(edges), st.floats())


def for_annotation(tp: Any, metadata: list | None = None, depth: int = 0) -> st.SearchStrategy:
    """Values for a field annotated `tp` (with pydantic's constraint metadata)."""
    metadata = list(metadata or [])
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if depth > 4:
        return junk
    if tp is Any or tp is object:
        return json_values()
    if origin is typing.Annotated:
        return for_annotation(args[0], [*metadata, *args[1:]], depth)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return model_bodies(tp, depth + 1)
    if origin is typing.Literal:
        return st.one_of(st.sampled_from(args), text)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(for_annotation(a, metadata, depth) for a in args))
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return _numbers(int, metadata)
    if tp is float:
        return _numbers(float, metadata)
    if tp is str:
        return text
    if origin in (list, typing.Sequence, set, frozenset) or tp is list:
        inner = for_annotation(args[0], None, depth + 1) if args else json_values(1)
        lo = next((m.min_length for m in metadata if isinstance(m, at.MinLen)), 0)
        return st.lists(inner, min_size=0, max_size=max(6, lo + 2))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(for_annotation(args[0], None, depth + 1), max_size=6)
        return st.tuples(*(for_annotation(a, None, depth + 1) for a in args)).map(list)
    if origin is dict or tp is dict:
        value = for_annotation(args[1], None, depth + 1) if args else json_values(1)
        return st.dictionaries(text, value, max_size=4)
    raise NoStrategy(f"no strategy for the annotation {tp!r}")


def _field_strategy(info: FieldInfo, depth: int) -> st.SearchStrategy:
    return st.one_of(for_annotation(info.annotation, info.metadata, depth), junk)


def model_bodies(model: type[BaseModel], depth: int = 0) -> st.SearchStrategy:
    """Dicts for `model`: required fields usually present, optional ones sometimes, values typed (or
    junk), now and then a missing required field or an extra key."""
    required, optional = {}, {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        (required if info.is_required() else optional)[key] = _field_strategy(info, depth)
    body = st.fixed_dictionaries(required, optional=optional)
    return st.one_of(body, body.flatmap(_drop_or_extra))


def _drop_or_extra(body: dict) -> st.SearchStrategy:
    extra = st.tuples(text, json_values(1)).map(lambda kv: {**body, kv[0] or "extra": kv[1]})
    if not body:
        return extra
    drop = st.sampled_from(sorted(body)).map(lambda k: {x: v for x, v in body.items() if x != k})
    return st.one_of(drop, extra)


# ---- mutations of the valid request ------------------------------------------------------------------
def _paths(doc: Any, prefix: tuple = (), limit: int = 400) -> list[tuple]:
    """Paths to every node of a JSON document (long lists: the first, a middle and the last element)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k), limit)
    elif isinstance(doc, list) and doc:
        idx = sorted({0, len(doc) // 2, len(doc) - 1}) if len(doc) > 3 else range(len(doc))
        for i in idx:
            out += _paths(doc[i], (*prefix, i), limit)
    return out[:limit]


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _like(value: Any) -> st.SearchStrategy:
    """A different value of the same JSON type as `value` (or junk)."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return _numbers(int, [])
    if isinstance(value, float):
        return _numbers(float, [])
    if isinstance(value, str):
        return text
    if isinstance(value, list):
        return st.one_of(st.just([]), st.just(value[:1]), st.just(value * 3), st.lists(json_values(0), max_size=4))
    if isinstance(value, dict):
        return st.dictionaries(text, json_values(1), max_size=3)
    return json_values(0)


def _apply(doc: Any, path: tuple, op: str, value: Any) -> Any:
    """A copy of `doc` with the node at `path` replaced by `value` (op "set"), deleted ("drop"), or
    given the extra key `value` ("extra", dict nodes)."""
    doc = copy.deepcopy(doc)
    if not path:
        return value if op == "set" else ({**doc, "extra": value} if isinstance(doc, dict) else value)
    parent, key = _get(doc, path[:-1]), path[-1]
    if op == "set":
        parent[key] = value
    elif op == "drop":
        del parent[key]
    elif op == "extra":
        node = parent[key]
        if isinstance(node, dict):
            node["zz_extra_é"] = value
        else:
            parent[key] = [node, value]
    return doc


def mutations(body: Any) -> st.SearchStrategy:
    """The valid body with one node changed (same type or junk), deleted, or given an extra key."""
    paths = _paths(body)

    def change(path: tuple) -> st.SearchStrategy:
        node = _get(body, path)
        return st.one_of(
            st.tuples(st.just("set"), st.one_of(_like(node), junk)),
            st.tuples(st.sampled_from(["drop", "extra"]) if path else st.just("extra"), json_values(0)),
        ).map(lambda opv: _apply(body, path, *opv))

    return st.sampled_from(paths).flatmap(change)


def field_replacements(body: dict, model: type[BaseModel]) -> st.SearchStrategy:
    """The valid body with one top-level field replaced by a typed value of that field."""
    fields = {(info.alias or name): info for name, info in model.model_fields.items()}
    return st.sampled_from(sorted(fields)).flatmap(
        lambda key: _field_strategy(fields[key], 1).map(lambda v: {**body, key: v}))


# ---- raw payloads ------------------------------------------------------------------------------------
RAW = [b"", b"{", b"}", b"null", b"[]", b"0", b'"body"', b"true", b"NaN", b'{"a":', b'{"a" 1}', b"{}" * 3,
       b"\xff\xfe\x00{", b"[" * 5000 + b"]" * 5000, b'{"x": ' + b"[" * 3000 + b"]" * 3000 + b"}",
       b'{"' + "é".encode() * 10 + b'": 1}', b"\x00" * 16, b'{"a": 1, "a": 2}']


def raw_payloads(valid: Request) -> st.SearchStrategy:
    """Bytes that are not the body the route expects, under its content type or another one."""
    over = b'{"pad": "' + b"x" * 3_000_000 + b'"}'     # 3 MB: far over every limit of the suite's apps
    bodies = st.sampled_from([*RAW, over])
    ctype = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""])
    return st.tuples(bodies, ctype).map(
        lambda bc: Request(valid.method, valid.url, params=valid.params, raw=bc[0], content_type=bc[1]))


# ---- a route's strategy ------------------------------------------------------------------------------
def find_route(app, method: str, path: str) -> APIRoute:
    for r in app.routes:
        if isinstance(r, APIRoute) and r.path == path and method in r.methods:
            return r
    raise NoStrategy(f"{method} {path} is in the OpenAPI schema but not an APIRoute of the app")


def _body_model(route: APIRoute) -> type[BaseModel] | None:
    if route.body_field is None:
        return None
    tp = route.body_field.field_info.annotation
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        raise NoStrategy(f"{route.path}: request body {tp!r} is not a pydantic model")
    return tp


def _param_strategies(route: APIRoute) -> tuple[dict, dict]:
    """(query, path) parameters: name -> strategy (typed from the annotation, junk strings too)."""
    query = {p.alias: st.one_of(for_annotation(p.field_info.annotation, p.field_info.metadata), text)
             for p in route.dependant.query_params}
    # a '/' in a path parameter selects another route: tests/reliability/test_fuzz.py checks unknown
    # routes on their own
    path = {p.alias: st.one_of(st.text(alphabet=st.characters(blacklist_characters="/?#%",
                                                                   blacklist_categories=("Cc", "Cs")),
                                       min_size=1, max_size=16), st.sampled_from(["0", "..", "é", "0" * 100]))
            for p in route.dependant.path_params}
    return query, path


def _query_value(v: Any) -> str:
    if isinstance(v, float) and not math.isfinite(v) or v in (HUGE, NEG_HUGE):
        return {HUGE: "1e400", NEG_HUGE: "-1e400"}.get(v, str(v))
    if v == BIG_INT:
        return "1" + "0" * 400
    return v if isinstance(v, str) else str(v)


def route_strategy(route: APIRoute, valid: Request, bases: tuple[Request, ...] = ()) -> st.SearchStrategy:
    """Requests for `route`: typed, field-replaced, mutated and raw (module docstring); `bases` are
    more valid requests to mutate."""
    model = _body_model(route)
    if model is not None:
        if any(v.body is NO_BODY or not isinstance(v.body, dict) for v in (valid, *bases)):
            raise NoStrategy(f"{route.path}: a valid request has no JSON object body")
        to_req = lambda body: Request(valid.method, valid.url, params=valid.params, body=body)  # noqa: E731
        bodies = [v.body for v in (valid, *bases)]
        return st.one_of(model_bodies(model).map(to_req),
                         st.sampled_from(bodies).flatmap(lambda b: field_replacements(b, model)).map(to_req),
                         st.sampled_from(bodies).flatmap(mutations).map(to_req),
                         st.sampled_from(bodies).flatmap(mutations).map(to_req),
                         raw_payloads(valid))
    if valid.body is not NO_BODY and isinstance(valid.body, dict):   # a raw body read by the route itself
        to_req = lambda body: Request(valid.method, valid.url, params=valid.params, body=body)  # noqa: E731
        bodies = [v.body for v in (valid, *bases)]
        return st.one_of(st.sampled_from(bodies).flatmap(mutations).map(to_req),
                         st.sampled_from(bodies).flatmap(mutations).map(to_req), raw_payloads(valid))
    query, path = _param_strategies(route)
    if not query and not path:   # no inputs: junk query strings and bodies it must ignore or refuse
        extras = st.dictionaries(text, text.map(str), max_size=3)
        return st.one_of(extras.map(lambda q: Request(valid.method, valid.url, params=q)), raw_payloads(valid))

    def build(args: tuple[dict, dict]) -> Request:
        q, p = args
        url = route.path
        for name, value in p.items():
            url = url.replace("{" + name + "}", value)
        return Request(valid.method, url, params={k: _query_value(v) for k, v in q.items()})

    valid_q = dict(valid.params or {})
    q_typed = st.fixed_dictionaries({}, optional=query)
    q_mut = st.sampled_from(sorted(query) or [""]).flatmap(
        lambda k: (query[k] if k else st.none()).map(lambda v: {**valid_q, k: v} if k else valid_q))
    return st.tuples(st.one_of(q_typed, q_mut), st.fixed_dictionaries(path)).map(build)


def fixed_battery(route: APIRoute, valid: Request) -> list[Request]:
    """Deterministic cases run for every route besides the generated ones: each raw payload, and each
    top-level field of the valid body missing, null, NaN, +-Infinity, 1e400, a 400-digit integer, a
    string, a boolean, an empty list / object, unicode and an oversized string."""
    out = [Request(valid.method, valid.url, params=valid.params, raw=raw) for raw in RAW]
    if isinstance(valid.body, dict):
        values = [None, math.nan, math.inf, -math.inf, HUGE, BIG_INT, "4", True, [], {}, "Ω🚀\u0000", "x" * 100_000]
        for key in valid.body:
            out.append(Request(valid.method, valid.url, body={k: v for k, v in valid.body.items() if k != key}))
            out += [Request(valid.method, valid.url, body={**valid.body, key: v}) for v in values]
        out.append(Request(valid.method, valid.url, body={**valid.body, "unexpected_field": 1}))
    for key in (valid.params or {}):
        for v in ("", "NaN", "1e400", "1" + "0" * 400, "Ω🚀", "x" * 10_000):
            out.append(Request(valid.method, valid.url, params={**valid.params, key: v}))
    return out
