"""The operator table of the query language (pure Python).

This module is the single source of operator names and of what each operator means. The parser
uses it to validate ``[path, operator, value]`` leaves, the in-memory engine to evaluate them, and
the Django compiler can use the metadata (`Operator.null_rule`, `Operator.negates`,
`Operator.ordering`, ...) to pick SQL with the same semantics.

Each `Operator.evaluate` takes the value found at the path (``x``, never missing: a missing key is
handled by the caller and never matches) and the *prepared* filter value (``y``, see
`Operator.prepare`), and applies the null rule of the spec's operator table itself. An operator that
cannot be applied to ``x`` (``^`` on a number, ``in`` a string with a null, ...) raises
`NotApplicable`; the engine turns that into a `QueryError` naming the leaf.
"""

from __future__ import annotations

import functools
import operator as _op
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import regex

from sessions_app.query.ast import BASE_OPERATORS, ORDERING_OPERATORS

if TYPE_CHECKING:
    # typeshed describes `re._parser` under its old name (importing that warns since Python 3.11).
    import sre_parse as _sre_parse
else:
    from re import _parser as _sre_parse  # the stdlib's own parser of `re` syntax

#: Prefix of the case-insensitive operator variants (``C=``, ``Cin``, ``C~``, ...).
CASEFOLD_PREFIX = "C"
#: Operators allowed on a path ending in ``.$date`` (and never with the ``C`` prefix).
DATE_OPERATORS: frozenset[str] = frozenset({"=", "!=", ">", ">=", "<", "<="})

#: Longest accepted ``~`` pattern, in characters (security policy "Expensive queries").
MAX_REGEX_LENGTH = 256
#: Upper bound of a pattern's size once its counted repeats are unrolled. The `regex` package
#: expands ``{m,n}`` repeats at compile time, so ``(?:(?:a{1000}){1000}){1000}`` (27 characters)
#: would exhaust memory while compiling, before any match-time timeout can help.
MAX_REGEX_EXPANSION = 10_000
#: Time budget of one regular-expression match, in seconds; exceeding it aborts the query.
REGEX_TIMEOUT_SECONDS = 0.1
#: Time budget of all the regular-expression matches of one query together, in seconds of CPU
#: time (F11): a pattern that takes just under `REGEX_TIMEOUT_SECONDS` on each of many rows is
#: stopped here. Ordinary patterns cost about 2 µs a match and a repeated value is matched once per
#: query (`engine.RegexBudget`): the worst allowed query over 100 000 sessions (security.md C20)
#: spends about 0.06 s.
REGEX_QUERY_BUDGET_SECONDS = 0.5
#: Most values accepted in the list of an ``in`` / ``nin`` filter.
MAX_IN_VALUES = 1000

#: How an operator treats a null ``x``: compared like any value, never matching, or seen as ``""``.
NullRule: TypeAlias = Literal["compare", "no_match", "empty_string"]
#: What the filter value must be: anything, a string, a container (list, string or object) for
#: ``in``/``nin``, or a regular expression pattern. A container is not checked when parsing: as in
#: TrueNAS, ``in`` a number raises only where a row has the path (`NotApplicable`), and a list is
#: capped at `MAX_IN_VALUES`; declared fields refuse a non-container up front (`schema`).
ValueRule: TypeAlias = Literal["any", "string", "container", "regex"]
#: How the ``C`` prefix applies: casefold both sides (``fold``) or match the regex ignoring case
#: with the pattern as written (``flag``).
CasefoldMode: TypeAlias = Literal["fold", "flag"]


class NotApplicable(TypeError):
    """The operator cannot be applied to the value found in a row (an evaluation error)."""


class InvalidRegex(ValueError):
    """A ``~`` pattern is too long, too expensive or does not compile."""


def json_type(value: object) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, datetime):
        return "datetime"
    return type(value).__name__


# --- evaluation functions: (x, prepared y) -> bool -------------------------------------------------


def _eq(x: Any, y: Any) -> bool:
    return bool(x == y)


def _ne(x: Any, y: Any) -> bool:
    return bool(x != y)


def _ordering(compare: Callable[[Any, Any], Any]) -> Callable[[Any, Any], bool]:
    def evaluate(x: Any, y: Any) -> bool:
        # Never a null, never across types (deviation: TrueNAS raises on None).
        if x is None or y is None:
            return False
        try:
            return bool(compare(x, y))
        except TypeError:
            return False

    return evaluate


def _contains(item: Any, container: Any) -> bool:
    """``item in container`` for a JSON container; `NotApplicable` when Python would refuse."""
    if isinstance(container, list | tuple):
        return item in container
    if isinstance(container, str):
        if not isinstance(item, str):
            raise NotApplicable(f"cannot look for {json_type(item)} inside a string")
        return item in container
    if isinstance(container, dict):
        try:
            return item in container
        except TypeError:
            raise NotApplicable(f"an object's keys cannot contain {json_type(item)}") from None
    raise NotApplicable(f"{json_type(container)} is not a list, string or object")


def _in(x: Any, y: Any) -> bool:
    return _contains(x, y)


def _nin(x: Any, y: Any) -> bool:
    if x is None:
        return False
    return not _contains(x, y)


def _rin(x: Any, y: Any) -> bool:
    if x is None:
        return False
    return _contains(y, x)


def _rnin(x: Any, y: Any) -> bool:
    if x is None:
        return False
    return not _contains(y, x)


def _string_test(method: Callable[[str, str], bool], negate: bool) -> Callable[[Any, Any], bool]:
    def evaluate(x: Any, y: Any) -> bool:
        if x is None:
            return False
        if not isinstance(x, str):
            raise NotApplicable(f"needs a string, found {json_type(x)}")
        if not isinstance(y, str):
            raise NotApplicable(f"needs a string filter value, got {json_type(y)}")
        return method(x, y) != negate

    return evaluate


def regex_subject(x: Any) -> str:
    """The string a ``~`` pattern is matched against: ``x`` itself, null as ``""``."""
    if x is None:
        return ""
    if not isinstance(x, str):
        raise NotApplicable(f"needs a string, found {json_type(x)}")
    return x


def _regex_match(x: Any, y: Any) -> bool:
    # `regex` raises the builtin TimeoutError when the budget is exhausted. (The engine matches
    # through its per-query `RegexBudget` instead; this is the operator table's plain form.)
    return y.match(regex_subject(x), timeout=REGEX_TIMEOUT_SECONDS) is not None


# --- preparation of the filter value ---------------------------------------------------------------


def casefold_value(value: Any) -> Any:
    """``str.casefold()`` a value for the ``C`` operators: a string, null (kept) or a list of strings.

    Anything else raises `NotApplicable` (spec: casefolding a non-string is an error).
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, list | tuple):
        folded = []
        for element in value:
            if not isinstance(element, str):
                raise NotApplicable(f"cannot casefold an array holding {json_type(element)}")
            folded.append(element.casefold())
        return folded
    raise NotApplicable(f"cannot casefold {json_type(value)}")


def _prepare_plain(value: Any, casefold: bool) -> Any:
    return casefold_value(value) if casefold else value


def _prepare_regex(value: Any, casefold: bool) -> Any:
    if not isinstance(value, str):
        raise InvalidRegex("the pattern must be a string")
    return compile_regex(value, casefold)


def _expanded_size(pattern: Any, budget: int) -> int:
    """Size of a parsed `re` pattern with counted repeats unrolled; stops counting past ``budget``."""
    total = 0
    for op, av in pattern:
        if op in (_sre_parse.MAX_REPEAT, _sre_parse.MIN_REPEAT, _sre_parse.POSSESSIVE_REPEAT):
            low, high, sub = av
            count = max(low, 1 if high == _sre_parse.MAXREPEAT else high, 1)
            total += count * _expanded_size(sub, budget)
        elif op is _sre_parse.SUBPATTERN:
            total += _expanded_size(av[3], budget)
        elif op is _sre_parse.BRANCH:
            total += sum(_expanded_size(branch, budget) for branch in av[1])
        elif op in (_sre_parse.ASSERT, _sre_parse.ASSERT_NOT):
            total += _expanded_size(av[1], budget)
        elif op is _sre_parse.ATOMIC_GROUP:
            total += _expanded_size(av, budget)
        elif op is _sre_parse.GROUPREF_EXISTS:
            total += _expanded_size(av[1], budget) + (_expanded_size(av[2], budget) if av[2] else 0)
        else:
            total += 1
        if total > budget:
            return total
    return total


_RE_QUANTIFIER = re.compile(r"\{\d*(?:,\d*)?\}")


def _regex_package_divergence(pattern: str) -> str | None:
    """Why the `regex` package would read valid `re` syntax differently, or None.

    `re` takes a ``{`` that does not start a ``{m,n}`` repeat literally, where `regex` reads a fuzzy
    match constraint (``a{e<=1}``); and `re` takes ``[`` inside a set literally, where `regex` reads
    a POSIX class (``[[:alpha:]]``). Both are refused, so every accepted pattern means the same to
    both engines. (Conservative: also refused inside ``(?x)`` comments.)
    """
    index, end = 0, len(pattern)
    in_set = False
    while index < end:
        char = pattern[index]
        if char == "\\":
            if pattern.startswith("N{", index + 1):  # \N{UNICODE NAME}
                close = pattern.find("}", index + 3)
                index = end if close < 0 else close + 1
            else:
                index += 2
            continue
        if in_set:
            if char == "]":
                in_set = False
            elif char == "[":
                return "a '[' inside a character set must be escaped as '\\['"
            index += 1
        elif char == "[":
            index += 1
            if index < end and pattern[index] == "^":
                index += 1
            if index < end and pattern[index] == "]":  # a leading ']' is literal
                index += 1
            in_set = True
        elif char == "{":
            quantifier = _RE_QUANTIFIER.match(pattern, index)
            if quantifier is None:
                return "a literal '{' must be escaped as '\\{'"
            index = quantifier.end()
        else:
            index += 1
    return None


@functools.lru_cache(maxsize=512)
def compile_regex(pattern: str, ignorecase: bool = False) -> regex.Pattern[str]:
    """Compile a ``~`` / ``C~`` pattern (Python `re` syntax) for a time-bounded match.

    The pattern must be at most `MAX_REGEX_LENGTH` characters, be valid `re` syntax (extensions of
    the `regex` package such as ``\\p{L}`` are therefore rejected, and so are the few spellings
    the two engines read differently, see `_regex_package_divergence`) and unroll to at most
    `MAX_REGEX_EXPANSION` nodes. It is compiled with the `regex` package in its ``V0`` (`re`
    compatible) mode so that `Operator.evaluate` can pass a ``timeout``. Raises `InvalidRegex`.
    """
    if len(pattern) > MAX_REGEX_LENGTH:
        raise InvalidRegex(f"the pattern is longer than {MAX_REGEX_LENGTH} characters")
    flags = re.IGNORECASE if ignorecase else 0
    try:
        with warnings.catch_warnings():
            # "Possible nested set" and friends: the pattern is still valid `re` syntax.
            warnings.simplefilter("ignore")
            parsed = _sre_parse.parse(pattern, flags)
            if _expanded_size(parsed, MAX_REGEX_EXPANSION) > MAX_REGEX_EXPANSION:
                raise InvalidRegex("the pattern's repeat counts are too large")
            re.compile(pattern, flags)
            problem = _regex_package_divergence(pattern)
            if problem is not None:
                raise InvalidRegex(problem)
            return regex.compile(pattern, regex.V0 | (regex.IGNORECASE if ignorecase else 0))
    except InvalidRegex:
        raise
    except Exception as exc:  # re.error, regex.error, OverflowError, RecursionError, ...
        raise InvalidRegex(f"invalid regular expression: {exc}") from None


# --- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operator:
    """One base operator (without the ``C`` prefix) and its semantics.

    ``evaluate(x, y)``: ``x`` is the value at the path (present, maybe null, already casefolded
    for ``C`` operators in ``fold`` mode), ``y`` the filter value returned by ``prepare(value,
    casefold)``. ``negates`` names the operator this one is the negation of (on present, non-null
    values; null rules differ, see ``null_rule``).
    """

    name: str
    evaluate: Callable[[Any, Any], bool]
    prepare: Callable[[Any, bool], Any]
    null_rule: NullRule
    value_rule: ValueRule
    ordering: bool = False
    date_ok: bool = False
    casefold_mode: CasefoldMode = "fold"
    negates: str | None = None
    description: str = ""


def _table() -> dict[str, Operator]:
    # fmt: off
    ops = [
        Operator("=", _eq, _prepare_plain, "compare", "any", date_ok=True,
                 description="x == y (Python equality)"),
        Operator("!=", _ne, _prepare_plain, "compare", "any", date_ok=True, negates="=",
                 description="x != y"),
        Operator(">", _ordering(_op.gt), _prepare_plain, "no_match", "any", ordering=True,
                 date_ok=True, description="x > y, same-kind values only"),
        Operator(">=", _ordering(_op.ge), _prepare_plain, "no_match", "any", ordering=True,
                 date_ok=True, description="x >= y, same-kind values only"),
        Operator("<", _ordering(_op.lt), _prepare_plain, "no_match", "any", ordering=True,
                 date_ok=True, description="x < y, same-kind values only"),
        Operator("<=", _ordering(_op.le), _prepare_plain, "no_match", "any", ordering=True,
                 date_ok=True, description="x <= y, same-kind values only"),
        Operator("~", _regex_match, _prepare_regex, "empty_string", "regex", casefold_mode="flag",
                 description="the pattern y matches at the start of x"),
        Operator("in", _in, _prepare_plain, "compare", "container",
                 description="x in y (list element, substring, object key)"),
        Operator("nin", _nin, _prepare_plain, "no_match", "container", negates="in",
                 description="x not in y"),
        Operator("rin", _rin, _prepare_plain, "no_match", "any",
                 description="y in x (list element, substring, object key)"),
        Operator("rnin", _rnin, _prepare_plain, "no_match", "any", negates="rin",
                 description="y not in x"),
        Operator("^", _string_test(str.startswith, False), _prepare_plain, "no_match", "string",
                 description="x starts with y"),
        Operator("!^", _string_test(str.startswith, True), _prepare_plain, "no_match", "string",
                 negates="^", description="x does not start with y"),
        Operator("$", _string_test(str.endswith, False), _prepare_plain, "no_match", "string",
                 description="x ends with y"),
        Operator("!$", _string_test(str.endswith, True), _prepare_plain, "no_match", "string",
                 negates="$", description="x does not end with y"),
    ]
    # fmt: on
    return {op.name: op for op in ops}


#: Base operator name -> `Operator`, in the order of `ast.BASE_OPERATORS`.
OPERATORS: Mapping[str, Operator] = MappingProxyType(_table())

if tuple(OPERATORS) != BASE_OPERATORS or {n for n, o in OPERATORS.items() if o.ordering} != set(
    ORDERING_OPERATORS
):  # pragma: no cover - guards the two lists against drifting apart
    raise RuntimeError("operators.OPERATORS disagrees with ast.BASE_OPERATORS / ORDERING_OPERATORS")

#: Every operator string a client may write: the base operators and their ``C`` variants.
OPERATOR_NAMES: frozenset[str] = frozenset(OPERATORS) | frozenset(
    CASEFOLD_PREFIX + name for name in OPERATORS
)


def lookup_operator(text: str) -> tuple[Operator, bool] | None:
    """Resolve an operator as written (``"C!^"``) to ``(Operator, casefold)``, or None if unknown.

    The ``C`` prefix is case-sensitive and must be followed by a base operator, so ``c=`` and a bare
    ``C`` are unknown.
    """
    found = OPERATORS.get(text)
    if found is not None:
        return found, False
    if text.startswith(CASEFOLD_PREFIX):
        found = OPERATORS.get(text[len(CASEFOLD_PREFIX) :])
        if found is not None:
            return found, True
    return None
