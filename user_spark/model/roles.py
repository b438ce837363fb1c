"""Roles and their prompts: which prefix a text gets before it is embedded.

USER-base (like E5) was trained with ``"query: "`` before queries and ``"passage: "`` before the passages
they retrieve; symmetric tasks (clustering, deduplication, paraphrase search) use ``query`` on both sides.
A model folder names its prompts in ``config_sentence_transformers.json``; when that file has none (older
snapshots of USER-base, models that never had prompts), USER-base's own prompts apply.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from user_spark.errors import RoleError

__all__ = ["DEFAULT_PROMPTS", "DEFAULT_ROLE", "Prompts", "prefix_for", "resolve_prompts"]

class Prompts(Mapping[str, str]):
    """An immutable, hashable role -> prefix table (it lives inside frozen options and specs).

    >>> Prompts({"query": "query: "})["query"]
    'query: '
    """

    __slots__ = ("_items",)

    def __init__(self, table: Mapping[str, str]) -> None:
        self._items = tuple(dict(table).items())

    def __getitem__(self, role: str) -> str:
        for key, prefix in self._items:
            if key == role:
                return prefix
        raise KeyError(role)

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return f"Prompts({dict(self._items)!r})"

    def __reduce__(self) -> tuple[type[Prompts], tuple[dict[str, str]]]:
        return (Prompts, (dict(self._items),))


DEFAULT_PROMPTS: Mapping[str, str] = Prompts({"query": "query: ", "passage": "passage: "})
DEFAULT_ROLE = "query"


def resolve_prompts(
    folder_prompts: Mapping[str, str] | None, override: Mapping[str, str] | None = None
) -> Prompts:
    """The role -> prefix table in force for a model.

    Args:
        folder_prompts: ``prompts`` from the model's ``config_sentence_transformers.json`` (may be empty).
        override: prompts given by the user; they replace the folder's entirely.

    Returns:
        The table, role name -> prefix (immutable, hashable).

    Raises:
        RoleError: if an override maps a role to something that is not a string.
    """
    chosen = override if override is not None else (folder_prompts or DEFAULT_PROMPTS)
    table = dict(chosen)
    bad = {k: v for k, v in table.items() if not isinstance(k, str) or not isinstance(v, str)}
    if bad:
        raise RoleError(f"Prompts must map role names to prefix strings; got {bad!r}")
    if not table:
        raise RoleError("The prompt table is empty; give at least one role, e.g. {'query': 'query: '}")
    return Prompts(table)


def prefix_for(role: str, prompts: Mapping[str, str]) -> str:
    """The prefix of ``role``.

    Raises:
        RoleError: naming the valid roles, if ``role`` is not one of them.

    >>> prefix_for("passage", DEFAULT_PROMPTS)
    'passage: '
    """
    try:
        return prompts[role]
    except (KeyError, TypeError):
        raise RoleError(
            f"Unknown role {role!r}; valid roles for this model: {sorted(prompts)}. "
            "Use 'query' for queries and symmetric tasks, 'passage' for the texts they retrieve."
        ) from None
