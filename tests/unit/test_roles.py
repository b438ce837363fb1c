from __future__ import annotations

import pytest

from user_spark.errors import RoleError
from user_spark.model.roles import DEFAULT_PROMPTS, prefix_for, resolve_prompts


def test_folder_prompts_are_used():
    assert resolve_prompts({"query": "q: ", "doc": "d: "}) == {"query": "q: ", "doc": "d: "}


def test_empty_or_missing_prompts_fall_back_to_user_base_defaults():
    assert resolve_prompts({}) == dict(DEFAULT_PROMPTS)
    assert resolve_prompts(None) == {"query": "query: ", "passage": "passage: "}


def test_override_replaces_folder_prompts():
    assert resolve_prompts({"query": "query: "}, {"query": ""}) == {"query": ""}


def test_unknown_role_lists_valid_ones():
    with pytest.raises(RoleError, match=r"Unknown role 'document'; valid roles for this model: \['passage', 'query'\]"):
        prefix_for("document", DEFAULT_PROMPTS)


def test_non_string_prompt_is_rejected():
    with pytest.raises(RoleError, match="prefix strings"):
        resolve_prompts(None, {"query": 1})
