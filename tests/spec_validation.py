"""Validate Hearth's HTTP traffic against the Matrix spec's OpenAPI definitions.

The spec (a checkout of matrix-org/matrix-spec) is located via the
``MATRIX_SPEC_DIR`` environment variable, or else at
``<project root>/../shared/matrix-spec`` (project root = parent of ``tests/``).
If it cannot be found every entry point raises ``FileNotFoundError`` -- tests
are never silently skipped.

Public API::

    validate_response(method, path, status, body, api="client-server")
    validate_request_body(method, path, body, api="client-server")
    validate_error(status, body)
    find_operation(method, path, api="client-server") -> Operation
    find_operations(method, path, api="client-server") -> [Operation, ...]
    check_refs(api="client-server") -> (number_of_refs_checked, [problems])
    spec_dir() -> pathlib.Path

All validation failures are raised as ``AssertionError`` with a readable
message, so they show up as ordinary test failures under pytest.

How it works: every spec file is loaded (cached) with a YAML 1.2-style loader
and registered lazily in a ``referencing.Registry`` under its ``file://`` URI.
A schema inside an OpenAPI file is validated through a one-line wrapper
``{"$ref": "file:///.../login.yaml#/paths/~1login/post/..."}`` so that every
relative ``$ref`` (``definitions/...``, ``../../event-schemas/...``,
``#/components/...``) is resolved against the file it was written in.
OpenAPI objects that are not schemas (responses, request bodies, path items)
are dereferenced by hand with the same URI rules.

No strictness is added beyond the schema: ``additionalProperties`` is whatever
the spec says (usually absent, i.e. allowed) and ``format`` is not asserted
(the spec uses custom formats such as ``mx-user-id`` as annotations).
"""

from __future__ import annotations

import difflib
import functools
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, unquote, urldefrag, urljoin, urlsplit

import jsonschema
import yaml
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012, specification_with

__all__ = [
    "Operation",
    "check_refs",
    "find_operation",
    "find_operations",
    "spec_dir",
    "validate_error",
    "validate_request_body",
    "validate_response",
]

_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_DEFAULT_VALIDATOR = jsonschema.Draft202012Validator

# --------------------------------------------------------------------------
# Locating the spec
# --------------------------------------------------------------------------


def spec_dir() -> Path:
    """Return the root of the matrix-spec checkout, or raise FileNotFoundError."""
    env = os.environ.get("MATRIX_SPEC_DIR")
    if env:
        candidate, source = Path(env).expanduser(), "the MATRIX_SPEC_DIR environment variable"
    else:
        project_root = Path(__file__).resolve().parent.parent
        candidate = project_root.parent / "shared" / "matrix-spec"
        source = "the default location <project root>/../shared/matrix-spec"
    candidate = candidate.resolve()
    if not (candidate / "api" / "client-server").is_dir():
        raise FileNotFoundError(
            f"Matrix spec not found at {candidate} (taken from {source}): expected a "
            "checkout of matrix-org/matrix-spec containing api/client-server/. "
            "Set MATRIX_SPEC_DIR to point at it."
        )
    return candidate


def _api_dir(api: str) -> Path:
    d = spec_dir() / "api" / api
    if not d.is_dir():
        available = sorted(p.name for p in (spec_dir() / "api").iterdir() if p.is_dir())
        raise FileNotFoundError(f"No API {api!r} in {d.parent} (available: {available})")
    return d


# --------------------------------------------------------------------------
# Loading files
# --------------------------------------------------------------------------


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 semantics for booleans and no timestamp magic.

    PyYAML implements YAML 1.1, where ``yes``/``no``/``on``/``off`` are
    booleans and ``2020-01-01`` is a date; the spec tooling treats them as
    strings.  (The current spec happens not to rely on either, but enum
    values like ``off`` would otherwise silently turn into ``False``.)
    """


_SpecLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _normalise(node: Any) -> Any:
    """Make loaded YAML JSON-shaped: string keys, and stripped ``$ref`` values.

    * unquoted mapping keys such as ``1.18:`` (report_content.yaml's
      x-changedInMatrixVersion) load as floats; JSON/OpenAPI keys are
      always strings.
    * ``$ref`` values are stripped defensively (a quoted ref with stray
      whitespace would otherwise name a non-existent file; the unquoted
      ``$ref: device_keys.yaml `` in olm_plaintext.yaml is already
      stripped by YAML itself).
    """
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            key = str(key).lower() if isinstance(key, bool) else str(key)
            if key == "$ref" and isinstance(value, str):
                out[key] = value.strip()
            elif key == "oneOf" and isinstance(value, list) and {"type": "object"} in value:
                # A spec defect: "oneOf: [{type: object}, <an object schema>]" (GET .../state/
                # {eventType}/{stateKey}) rejects every body that matches the second branch,
                # since it then matches both. The intent is "either"; read it as anyOf.
                out["anyOf"] = _normalise(value)
            else:
                out[key] = _normalise(value)
        return out
    if isinstance(node, list):
        return [_normalise(v) for v in node]
    return node


@functools.lru_cache(maxsize=None)
def _load_path(path: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"spec file not found: {p}")
    with p.open(encoding="utf-8") as f:
        if p.suffix == ".json":
            return json.load(f)
        return _normalise(yaml.load(f, Loader=_SpecLoader))


def _file_uri(path: Path) -> str:
    return path.resolve().as_uri()


def _uri_to_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise FileNotFoundError(f"cannot load non-file reference {uri!r}")
    return Path(unquote(parts.path))


def _load_uri(uri: str) -> Any:
    return _load_path(str(_uri_to_path(urldefrag(uri)[0])))


def _retrieve(uri: str) -> Resource:
    contents = _load_uri(uri)
    spec = DRAFT202012
    if isinstance(contents, dict) and isinstance(contents.get("$schema"), str):
        spec = specification_with(contents["$schema"], default=DRAFT202012)
    return Resource(contents=contents, specification=spec)


_REGISTRY: Registry = Registry(retrieve=_retrieve)


# --------------------------------------------------------------------------
# JSON pointers and $ref resolution for non-schema OpenAPI objects
# --------------------------------------------------------------------------


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _pointer(*tokens: str) -> str:
    return "".join("/" + _escape(str(t)) for t in tokens)


def _follow_pointer(doc: Any, pointer: str) -> Any:
    if pointer in ("", "/"):
        return doc
    if not pointer.startswith("/"):
        raise KeyError(f"unsupported JSON pointer {pointer!r} (anchors are not used by the spec)")
    node = doc
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(token)]
        elif isinstance(node, dict):
            node = node[token]
        else:
            raise KeyError(token)
    return node


@dataclass(frozen=True)
class _Located:
    """A value together with the file URI and JSON pointer it lives at."""

    uri: str
    pointer: str
    value: Any

    def child(self, *tokens: str) -> "_Located":
        value = self.value
        for t in tokens:
            value = value[t]
        return _Located(self.uri, self.pointer + _pointer(*tokens), value)

    @property
    def ref_uri(self) -> str:
        return f"{self.uri}#{quote(self.pointer, safe='/~')}"


def _resolve_ref(base_uri: str, ref: str) -> _Located:
    target = urljoin(base_uri, ref)
    uri, fragment = urldefrag(target)
    doc = _load_uri(uri)
    pointer = unquote(fragment)
    return _Located(uri, pointer, _follow_pointer(doc, pointer))


def _deref(loc: _Located, limit: int = 50) -> _Located:
    """Follow ``$ref`` chains on a non-schema OpenAPI object."""
    for _ in range(limit):
        if not (isinstance(loc.value, dict) and "$ref" in loc.value):
            return loc
        loc = _resolve_ref(loc.uri, loc.value["$ref"])
    raise AssertionError(f"$ref chain too long at {loc.ref_uri}")


# --------------------------------------------------------------------------
# Operation index and path matching
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """An OpenAPI operation matched for a concrete request."""

    method: str  # lower-case
    template: str  # full path template incl. base path, e.g. /_matrix/client/v3/devices/{deviceId}
    file: Path
    location: _Located = field(repr=False)  # the (dereferenced) operation object
    dialect: str | None  # jsonSchemaDialect declared by the OpenAPI document, if any
    path_params: tuple[tuple[str, str], ...] = ()

    @property
    def operation(self) -> dict:
        return self.location.value

    def describe(self) -> str:
        return f"{self.method.upper()} {self.template} ({self.file.name})"


def _server_base_paths(servers: Any) -> list[str]:
    """All base paths a list of OpenAPI Server Objects can expand to.

    Each file declares ``url: "{protocol}://{hostname}{basePath}"`` with the
    actual prefix (``/_matrix/client/v3``, ``/_matrix/client/v1``,
    ``/_matrix/client``, ``/_matrix``, ``/.well-known``, ...) in the
    ``basePath`` variable.  Every ``enum`` value of every variable is
    expanded (falling back to ``default``), so a file offering e.g.
    ``basePath: {enum: [/_matrix/client/r0, /_matrix/client/v3]}`` matches
    both prefixes.
    """
    if not servers:
        return [""]
    bases: list[str] = []
    for server in servers:
        url = server.get("url", "/")
        variables = server.get("variables") or {}
        names = re.findall(r"\{([^}]+)\}", url)
        choices = []
        for name in names:
            var = variables.get(name) or {}
            values = list(var.get("enum") or [])
            if "default" in var and var["default"] not in values:
                values.append(var["default"])
            if not values:
                raise AssertionError(f"server variable {name!r} in {url!r} has no default/enum")
            choices.append([str(v) for v in values])
        for combo in itertools.product(*choices):
            expanded = url
            for name, value in zip(names, combo):
                expanded = expanded.replace("{" + name + "}", value)
            path = urlsplit(expanded).path if "://" in expanded else expanded
            path = path.rstrip("/")
            if path not in bases:
                bases.append(path)
    return bases


_PARAM_RE = re.compile(r"\{([^}/]+)\}")


def _segment_regex(segment: str) -> re.Pattern | None:
    """Regex for a template segment containing parameters; None for a literal."""
    if not _PARAM_RE.search(segment):
        return None
    out, pos = "", 0
    for m in _PARAM_RE.finditer(segment):
        out += re.escape(segment[pos : m.start()])
        # Parameters may be empty: e.g. an empty state_key in
        # /rooms/{roomId}/state/{eventType}/{stateKey} ("/state/m.room.name/").
        out += f"(?P<{_param_group(m.group(1))}>[^/]*)"
        pos = m.end()
    out += re.escape(segment[pos:])
    return re.compile(out + r"\Z")


def _param_group(name: str) -> str:
    return "p_" + re.sub(r"\W", "_", name)


@dataclass(frozen=True)
class _Route:
    template: str
    segments: tuple[str, ...]
    matchers: tuple[re.Pattern | None, ...]
    # method -> [(file, located operation, dialect), ...]; usually one entry,
    # more when the spec documents the same endpoint in several files.
    methods: dict

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for seg, literal, matcher in zip(segments, self.segments, self.matchers):
            if matcher is None:
                if seg != literal and unquote(seg) != literal:
                    return None
            else:
                m = matcher.fullmatch(seg)
                if m is None:
                    return None
                for name in _PARAM_RE.findall(literal):
                    params[name] = unquote(m.group(_param_group(name)))
        return params

    @property
    def specificity(self) -> tuple[int, ...]:
        return tuple(1 if m is None else 0 for m in self.matchers)


def _api_files(api: str) -> list[Path]:
    """Top-level OpenAPI documents of an API (definitions/ hold shared schemas)."""
    return sorted(p for p in _api_dir(api).glob("*.yaml") if p.is_file())


@functools.lru_cache(maxsize=None)
def _routes(root: str, api: str) -> tuple[_Route, ...]:
    by_template: dict[str, dict] = {}
    for path in _api_files(api):
        doc = _load_path(str(path))
        if not isinstance(doc, dict) or "paths" not in doc:
            continue
        uri = _file_uri(path)
        dialect = doc.get("jsonSchemaDialect")
        root_loc = _Located(uri, "", doc)
        for rel_path, _item in (doc.get("paths") or {}).items():
            item_loc = _deref(root_loc.child("paths", rel_path))
            item = item_loc.value
            for method in _HTTP_METHODS:
                if method not in item:
                    continue
                op_loc = _deref(item_loc.child(method))
                servers = op_loc.value.get("servers") or item.get("servers") or doc.get("servers")
                for base in _server_base_paths(servers):
                    # Quirk: peeking_events.yaml declares "/events " (with a
                    # trailing space) to document a second variant of
                    # old_sync.yaml's GET /events.  Strip it and keep both
                    # definitions as alternatives.
                    template = base + rel_path.strip()
                    methods = by_template.setdefault(template, {})
                    methods.setdefault(method, []).append((path, op_loc, dialect))
    routes = []
    for template, methods in by_template.items():
        segments = tuple(template.split("/"))
        routes.append(_Route(template, segments, tuple(_segment_regex(s) for s in segments), methods))
    return tuple(routes)


def find_operation(method: str, path: str, api: str = "client-server") -> Operation:
    """Find the spec operation for a concrete request path such as
    ``/_matrix/client/v3/devices/ABCDEF``.  A full URL or a query string is
    accepted too (only the path is used).  Raises AssertionError if the path
    or the method is not in the spec.  If the spec documents the endpoint
    more than once (GET /events), the first definition is returned; see
    find_operations()."""
    return find_operations(method, path, api)[0]


def find_operations(method: str, path: str, api: str = "client-server") -> list[Operation]:
    """Like find_operation(), but returns every definition of the endpoint."""
    method_l = method.lower()
    concrete = urlsplit(path).path if "://" in path else path.split("?", 1)[0].split("#", 1)[0]
    segments = concrete.split("/")
    routes = _routes(str(spec_dir()), api)
    matches = [(r, p) for r in routes if (p := r.match(segments)) is not None]
    if not matches:
        raise AssertionError(
            f"{method.upper()} {concrete}: no path in the {api} spec matches this request path"
            + _near_misses(concrete, routes)
        )
    with_method = [(r, p) for r, p in matches if method_l in r.methods]
    if not with_method:
        documented = sorted({m.upper() for r, _ in matches for m in r.methods})
        raise AssertionError(
            f"{method.upper()} {concrete}: method not documented for "
            f"{', '.join(r.template for r, _ in matches)}; documented methods: {documented}"
        )
    route, params = max(with_method, key=lambda rp: rp[0].specificity)
    return [
        Operation(method_l, route.template, file, op_loc, dialect, tuple(params.items()))
        for file, op_loc, dialect in route.methods[method_l]
    ]


def _near_misses(concrete: str, routes: tuple[_Route, ...]) -> str:
    """Suggest similar templates, to help spot typos or wrong version
    prefixes (e.g. r0 vs v3 -- the current spec only documents v1/v3)."""
    templates = sorted({r.template for r in routes})
    close = difflib.get_close_matches(concrete, templates, n=5, cutoff=0.5)
    if not close:
        return ""
    return "\n  closest spec paths:\n    " + "\n    ".join(close)


# --------------------------------------------------------------------------
# Schema validation
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _validator(ref_uri: str, dialect: str | None) -> jsonschema.protocols.Validator:
    cls = _DEFAULT_VALIDATOR
    if dialect:
        # OpenAPI 3.1's default dialect (the OAS base vocabulary) is JSON
        # Schema 2020-12 plus annotation-only keywords, which
        # validator_for() doesn't know and maps to the default.
        cls = jsonschema.validators.validator_for({"$schema": dialect}, default=_DEFAULT_VALIDATOR)
    return cls({"$ref": ref_uri}, registry=_REGISTRY)


def _short(value: Any, limit: int = 200) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_error(err: jsonschema.ValidationError) -> str:
    where = err.json_path
    schema_path = "/".join(str(p) for p in err.relative_schema_path)
    msg = err.message
    if len(msg) > 300:
        msg = msg[:297] + "..."
    line = f"  at {where}: {msg}  [schema: {schema_path}]"
    if err.context:
        # anyOf/oneOf: show why the best alternative failed
        sub = best_match(err.context)
        line += f"\n      best alternative failed at {sub.json_path}: {sub.message[:200]}"
    return line


def _validate_schema(schema_loc: _Located, dialect: str | None, instance: Any, what: str) -> None:
    validator = _validator(schema_loc.ref_uri, dialect)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(e.absolute_path), e.message))
    if not errors:
        return
    lines = [f"{what} does not match the spec schema at {_display_uri(schema_loc)}"]
    lines.append(f"  body: {_short(instance)}")
    lines.extend(_format_error(e) for e in errors[:15])
    if len(errors) > 15:
        lines.append(f"  ... and {len(errors) - 15} more errors")
    raise AssertionError("\n".join(lines))


def _display_uri(loc: _Located) -> str:
    path = _uri_to_path(loc.uri)
    try:
        shown = str(path.relative_to(spec_dir()))
    except ValueError:
        shown = str(path)
    return f"{shown}#{loc.pointer}"


def _json_media(content: dict) -> str | None:
    for media_type in content:
        base = media_type.split(";", 1)[0].strip().lower()
        if base == "application/json" or base.endswith("+json"):
            return media_type
    return None


def _response_key(responses: dict, status: int) -> str | None:
    for key in (str(status), f"{status // 100}XX", f"{status // 100}xx", "default"):
        if key in responses:
            return key
    return None


def validate_response(method: str, path: str, status: int, body: object, api: str = "client-server") -> None:
    """Assert that ``body`` is a valid ``status`` response to ``method path``.

    * The status must be documented for the operation (exactly, as ``2XX``
      style range, or via ``default``); otherwise AssertionError.
    * If a JSON schema is documented it is applied to ``body`` (the parsed
      JSON value).
    * If the status documents no body at all, ``body`` is unconstrained --
      except for 4xx/5xx, where the spec's standard error response
      (definitions/errors/error.yaml) applies to any non-None body.
    * If only non-JSON content (e.g. image/png) is documented, ``body`` must
      be None, bytes or str.
    """
    _first_success(
        find_operations(method, path, api),
        lambda op: _validate_response_for(op, method, path, status, body),
    )


def _first_success(ops: list[Operation], check) -> None:
    """Pass if ``check`` passes for any of the alternative definitions."""
    failures = []
    for op in ops:
        try:
            check(op)
            return
        except AssertionError as exc:
            failures.append(str(exc))
    if len(failures) == 1:
        raise AssertionError(failures[0])
    raise AssertionError(
        f"no definition of this endpoint accepts it ({len(failures)} in the spec):\n" + "\n".join(failures)
    )


def _validate_response_for(op: Operation, method: str, path: str, status: int, body: object) -> None:
    what = f"{method.upper()} {path} -> {status} response [{op.describe()}]"
    responses_loc = _deref(op.location.child("responses")) if "responses" in op.operation else None
    responses = responses_loc.value if responses_loc else {}
    key = _response_key(responses, status)
    if key is None:
        raise AssertionError(
            f"{method.upper()} {path}: status {status} is not documented for {op.describe()}; "
            f"documented statuses: {sorted(responses)}"
        )
    response_loc = _deref(responses_loc.child(key))
    content = response_loc.value.get("content") or {}
    if not content:
        if status >= 400 and body is not None:
            _validate_schema(_standard_error_schema(), None, body, what + " (standard error response)")
        return
    media = _json_media(content)
    if media is None:
        if body is None or isinstance(body, (bytes, bytearray, str)):
            return
        raise AssertionError(
            f"{what}: spec documents only non-JSON content {sorted(content)}, got {_short(body)}"
        )
    media_loc = _deref(response_loc.child("content", media))
    if "schema" not in media_loc.value:
        return
    _validate_schema(media_loc.child("schema"), op.dialect, body, what)


def validate_request_body(method: str, path: str, body: object, api: str = "client-server") -> None:
    """Assert that ``body`` (parsed JSON, or None for no body) is a valid request
    body for ``method path``.

    If the operation documents no request body, only None or ``{}`` is
    accepted (clients commonly send ``{}`` to e.g. POST /logout).  If the
    body is documented as required, None is rejected.  Non-JSON bodies (media
    upload) must be bytes/str.
    """
    _first_success(
        find_operations(method, path, api),
        lambda op: _validate_request_body_for(op, method, path, body),
    )


def _validate_request_body_for(op: Operation, method: str, path: str, body: object) -> None:
    what = f"{method.upper()} {path} request body [{op.describe()}]"
    if "requestBody" not in op.operation:
        if body is None or body == {}:
            return
        raise AssertionError(f"{what}: the spec documents no request body, got {_short(body)}")
    rb_loc = _deref(op.location.child("requestBody"))
    if body is None:
        if rb_loc.value.get("required"):
            raise AssertionError(f"{what}: a request body is required by the spec")
        return
    content = rb_loc.value.get("content") or {}
    media = _json_media(content)
    if media is None:
        if isinstance(body, (bytes, bytearray, str)):
            return
        raise AssertionError(f"{what}: spec documents only non-JSON content {sorted(content)}, got {_short(body)}")
    media_loc = _deref(rb_loc.child("content", media))
    if "schema" not in media_loc.value:
        return
    _validate_schema(media_loc.child("schema"), op.dialect, body, what)


def _standard_error_schema() -> _Located:
    path = _api_dir("client-server") / "definitions" / "errors" / "error.yaml"
    return _Located(_file_uri(path), "", _load_path(str(path)))


def validate_error(status: int, body: object) -> None:
    """Assert ``body`` is a Matrix standard error response for ``status``.

    The body must be a JSON object with string ``errcode`` and string
    ``error`` (the spec's "standard error response";
    definitions/errors/error.yaml only *requires* errcode, but the prose
    says both are present).  For 429 the body is additionally checked
    against definitions/errors/rate_limited.yaml (``retry_after_ms`` must be
    an integer if present).  Extra keys are allowed.
    """
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise AssertionError(f"error responses must have a 4xx/5xx status, got {status!r}")
    what = f"{status} error response"
    _validate_schema(_standard_error_schema(), None, body, what)
    if not isinstance(body.get("error"), str):  # type: ignore[union-attr]
        raise AssertionError(
            f"{what}: standard error responses must have a string 'error' message, got {_short(body)}"
        )
    if status == 429:
        path = _api_dir("client-server") / "definitions" / "errors" / "rate_limited.yaml"
        loc = _Located(_file_uri(path), "", _load_path(str(path)))
        _validate_schema(loc, None, body, what)


# --------------------------------------------------------------------------
# Whole-spec reference check
# --------------------------------------------------------------------------


def _iter_refs(node: Any, pointer: str = "") -> Iterator[tuple[str, str]]:
    """Yield (json pointer of the object holding $ref, ref string) for every
    ``$ref`` in a loaded document -- including those inside ``example``
    values, which the spec build tooling also resolves."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield pointer, ref
        for key, value in node.items():
            yield from _iter_refs(value, pointer + _pointer(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _iter_refs(value, f"{pointer}/{i}")


def check_refs(api: str = "client-server") -> tuple[int, list[str]]:
    """Load every file under ``api/<api>`` (recursively) and resolve every
    ``$ref`` in it, following references into other files (event-schemas,
    other APIs' definitions, examples) transitively.

    Returns ``(number of refs checked, list of problems)``.
    """
    root = _api_dir(api)
    queue = [p.resolve() for p in sorted(root.rglob("*")) if p.suffix in (".yaml", ".json") and p.is_file()]
    seen: set[Path] = set()
    problems: list[str] = []
    count = 0
    base = spec_dir()

    def rel(p: Path) -> str:
        try:
            return str(p.relative_to(base))
        except ValueError:
            return str(p)

    while queue:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        try:
            doc = _load_path(str(path))
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            problems.append(f"{rel(path)}: failed to load: {exc}")
            continue
        uri = _file_uri(path)
        for where, ref in _iter_refs(doc):
            count += 1
            try:
                target = _resolve_ref(uri, ref)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{rel(path)}#{where}: $ref {ref!r} does not resolve: {type(exc).__name__}: {exc}")
                continue
            target_path = _uri_to_path(target.uri).resolve()
            if target_path not in seen:
                queue.append(target_path)
    return count, problems
