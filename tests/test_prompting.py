"""Tests for sandboxed prompt rendering and the templates shipped in prompts/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cpo.errors import ModelError
from cpo.personalization.prompting import (
    VARIANT_PARTS,
    PromptRenderer,
    render_template_text,
    variant_template,
)
from cpo.providers.base import Document

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
# The sample's configured merge tags: there is no built-in list (vars.messages.merge_tags).
MERGE_TAGS = tuple(
    yaml.safe_load((PROMPTS.parent / "cpo.yml").read_text(encoding="utf-8"))["vars"]["messages"][
        "merge_tags"
    ]
)
TONES = ("friendly", "informational", "urgent")


@pytest.fixture
def renderer(tmp_path: Path) -> PromptRenderer:
    files = {
        "ok.txt": "Hi {{ first_name }}, {{ greeting }}\n{% raw %}{{ literal }}{% endraw %}",
        "undefined.txt": "line one\n{{ greeting }}\n{{ missing_var }}\n",
        "syntax.txt": "fine\nfine\n{% if %}\n",
        "internals.txt": "{{ ''.__class__.__mro__ }}",
        "mutate.txt": "{{ items.append(4) }}",
        "outer.txt": "outer\n{% include 'undefined.txt' %}\n",
        "override.txt": "{{ first_name | upper }}",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return PromptRenderer(tmp_path, merge_tags=("first_name", "city", "tier", "unsubscribe_url"))


def test_render_keeps_merge_tags_and_raw_blocks(renderer):
    assert (
        renderer.render("ok.txt", greeting="hello") == "Hi {{ first_name }}, hello\n{{ literal }}"
    )


def test_a_variable_may_be_called_name(renderer, tmp_path):
    (tmp_path / "named.txt").write_text("{{ name }}", encoding="utf-8")
    assert renderer.render("named.txt", name="Ada") == "Ada"


def test_source_returns_unrendered_text(renderer):
    assert renderer.source("ok.txt").startswith("Hi {{ first_name }}, {{ greeting }}")


def test_sandbox_blocks_python_internals(renderer, tmp_path):
    with pytest.raises(ModelError, match="sandbox forbids") as info:
        renderer.render("internals.txt")
    assert info.value.path == str(tmp_path / "internals.txt")
    assert info.value.line == 1


def test_sandbox_is_immutable(renderer):
    items = [1, 2, 3]
    with pytest.raises(ModelError, match="unsafe"):
        renderer.render("mutate.txt", items=items)
    assert items == [1, 2, 3]


def test_undefined_variable_names_file_variable_and_line(renderer, tmp_path):
    with pytest.raises(ModelError) as info:
        renderer.render("undefined.txt", greeting="hi")
    err = info.value
    assert "missing_var" in err.message
    assert (err.path, err.line) == (str(tmp_path / "undefined.txt"), 3)
    assert str(err).startswith(f"{tmp_path / 'undefined.txt'}:3: undefined variable")


def test_undefined_variable_in_included_file_names_that_file(renderer, tmp_path):
    with pytest.raises(ModelError) as info:
        renderer.render("outer.txt", greeting="hi")
    assert (info.value.path, info.value.line) == (str(tmp_path / "undefined.txt"), 3)


def test_syntax_error_names_file_and_line(renderer, tmp_path):
    with pytest.raises(ModelError, match="syntax error") as info:
        renderer.render("syntax.txt")
    assert (info.value.path, info.value.line) == (str(tmp_path / "syntax.txt"), 3)


def test_missing_template_is_a_model_error(renderer):
    with pytest.raises(ModelError, match=r"'nope\.txt' not found"):
        renderer.render("nope.txt")
    with pytest.raises(ModelError, match="not found"):
        renderer.source("nope.txt")
    assert not renderer.exists("nope.txt")


def test_passing_a_merge_tag_as_variable_is_refused(renderer):
    with pytest.raises(ModelError, match="first_name are merge tags"):
        renderer.render("ok.txt", greeting="hi", first_name="Ada")


def test_render_template_text_names_the_given_file():
    with pytest.raises(ModelError) as info:
        render_template_text("a\nb\n{{ nope }}", template_name="prompts/tones/x/compose.txt")
    assert (info.value.path, info.value.line) == ("prompts/tones/x/compose.txt", 3)
    with pytest.raises(ModelError, match="sandbox forbids"):
        render_template_text("{{ x.__globals__ }}", template_name="t.txt", x=render_template_text)
    assert (
        render_template_text("{{ city }} {{ name }}", merge_tags=["city"], name=2) == "{{ city }} 2"
    )
    with pytest.raises(ModelError, match=r"vars\.messages\.merge_tags"):
        render_template_text("{{ city }}")  # a tag the project does not configure


def test_variant_template_layout():
    assert variant_template("urgent", "compose") == "tones/urgent/compose.txt"
    assert variant_template("control", "subject") == "control/subject.txt"
    assert variant_template("control", "body") == "control/body.txt"
    with pytest.raises(ModelError, match="unknown template part"):
        variant_template("urgent", "body")
    with pytest.raises(ModelError, match="written by a person"):
        variant_template("control", "compose")


# The shipped prompts/ directory.


@pytest.fixture(scope="module")
def prompts() -> PromptRenderer:
    return PromptRenderer(PROMPTS, merge_tags=MERGE_TAGS)


def test_every_tone_has_three_files_and_the_control_two(prompts):
    assert set(TONES) <= set(prompts.tones())
    for tone in prompts.tones():
        for part in VARIANT_PARTS:
            assert prompts.exists(variant_template(tone, part)), (tone, part)
    assert prompts.exists("control/subject.txt") and prompts.exists("control/body.txt")


@pytest.mark.parametrize("tone", TONES)
def test_no_body_template_writes_compliance_text(prompts, tone):
    text = prompts.render(
        variant_template(tone, "compose"),
        sentences="S.",
        sentence_list=["S."],
        title="T",
        tone=tone,
    )
    assert "unsubscribe" not in text.lower()  # the footer carries it
    # Names only through tags that never dangle ("Hello," / "Something for you:").
    assert "{{ greeting }}" in text or "{{ name_suffix }}" in text
    assert "{{ first_name }}" not in text


def test_system_prompt_states_the_rules(prompts):
    text = prompts.render("system.txt", brand="Acme", subject_max_chars=60)
    assert "Acme" in text
    assert '"subject"' in text and '"citations"' in text
    assert "[DOC_ID]" in text
    for tag in MERGE_TAGS:
        # The model is never asked to write the unsubscribe link: the footer has it.
        assert ("{{ " + tag + " }}" in text) == (tag != "unsubscribe_url")


@pytest.mark.parametrize("tone", TONES)
def test_generation_prompt_lists_documents_and_includes_tone(prompts, tone):
    docs = [Document("D1", "Shoes", "Trail shoes.\nIn stock."), Document("D2", "Points", "Earn.")]
    segment = (
        None
        if tone == "control"
        else {
            "segment_id": "S1",
            "segment_name": "Runners",
            "description": "Frequent buyers",
            "profile": {"customers": 120, "avg_spend": 54.2},
        }
    )
    text = prompts.render(
        "generation.txt",
        segment=segment,
        tone=tone,
        documents=docs,
        min_words=40,
        max_words=120,
        subject_max_chars=60,
    )
    assert "[D1] Shoes: Trail shoes. In stock." in text
    assert "[D2] Points: Earn." in text
    assert "40 to 120 words" in text and "at most 60 characters" in text
    instructions = prompts.render(variant_template(tone, "instructions"))
    assert instructions in text
    if segment:
        assert '"Runners"' in text and "- avg_spend: 54.2" in text
