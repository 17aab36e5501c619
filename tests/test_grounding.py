"""Lexical grounding (cpo/personalization/grounding.py): each sentence supported by the document it
cites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cpo.errors import ConfigurationError
from cpo.personalization import grounding
from cpo.personalization.policy import screen

CORPUS = json.loads((Path(__file__).parent / "fixtures" / "grounding_corpus.json").read_text())
DOCS = CORPUS["documents"]
SETTINGS = grounding.resolve({})


def flagged(text: str, cites: str, settings: grounding.Settings = SETTINGS) -> bool:
    verdicts = grounding.judge(f"{text} [{cites}]", DOCS, settings, [cites])
    return not all(v.supported for v in verdicts)


def corpus_scores(settings: grounding.Settings) -> tuple[float, float]:
    """Precision and recall of flagging unsupported sentences."""
    tp = fp = fn = 0
    for item in CORPUS["sentences"]:
        hit = flagged(item["text"], item["cites"], settings)
        tp += hit and not item["supported"]
        fp += hit and item["supported"]
        fn += not hit and not item["supported"]
    return tp / max(1, tp + fp), tp / max(1, tp + fn)


def test_the_labelled_corpus_is_balanced_and_large_enough():
    labels = [s["supported"] for s in CORPUS["sentences"]]
    assert len(labels) >= 40 and sum(labels) == len(labels) / 2


def test_precision_and_recall_on_the_labelled_corpus():
    precision, recall = corpus_scores(SETTINGS)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    # Without reading the words (support threshold 0) nothing unsupported is caught.
    assert corpus_scores(grounding.resolve({"min_support": 0}))[1] == 0


def test_a_sentence_citing_the_wrong_document_is_unsupported():
    assert not flagged("Gold members earn double points on every order.", "D4")
    assert flagged("Gold members earn double points on every order.", "D2")


def test_markers_after_the_full_stop_belong_to_the_sentence_before():
    sentences = grounding.split_sentences(
        "Hi {{ first_name }},\n\nBoots are waterproof. [D2] Members earn points. [D4][D3]"
    )
    assert [(s.text, s.citations) for s in sentences] == [
        ("Hi {{ first_name }},", ()),
        ("Boots are waterproof.", ("D2",)),
        ("Members earn points.", ("D4", "D3")),
    ]


def test_connective_copy_may_go_uncited_but_claims_may_not():
    body = (
        "Hi {{ first_name }},\n\nWe thought you'd like to hear about this.\n\n"
        "Our trail boots are waterproof. [D2]\n\nThanks for being with us."
    )
    assert all(v.supported for v in grounding.judge(body, DOCS, SETTINGS, ["D2"]))
    invented = body + "\n\nOur boots were tested on Everest by famous climbers."
    verdicts = grounding.judge(invented, DOCS, SETTINGS, ["D2"])
    assert [v.reason.split(":")[0] for v in verdicts if not v.supported] == ["uncited_sentence"]
    # The reason names the sentence by number, never quotes it.
    assert "Everest" not in verdicts[-1].reason


@pytest.mark.parametrize(
    "text",
    [
        "<the email body>",
        "Hello [Your Name], here is our offer.",
        "Lorem ipsum dolor sit amet.",
        "See DOC_ID for details.",
        '"subject": "Hello", "body": "x"',
        "Write the subject line here.",
    ],
)
def test_placeholders_and_template_echoes_are_found(text):
    assert grounding.find_placeholders(text)


def test_merge_tags_are_not_placeholders():
    assert grounding.find_placeholders("Hi {{ first_name }}, see you in {{ city }}.") == []


def run(body: str, policy: dict, **kwargs):
    return screen(
        "Boots",
        body,
        citations=["D2"],
        retrieved_ids=["D2"],
        cited_texts=DOCS,
        safety_result=None,
        thresholds={},
        policy=policy,
        **kwargs,
    )


def test_the_threshold_comes_from_cpo_yml_and_the_check_can_be_disabled():
    body = "Our trail boots are waterproof and very stylish. [D2]"  # 4 of 6 words: 67 %
    checks = {c.check: c for c in run(body, {})}
    assert checks["grounding:sentences"].passed
    strict = {c.check: c for c in run(body, {"grounding": {"min_support": 0.9}})}
    assert not strict["grounding:sentences"].passed
    assert "min 90%" in strict["grounding:sentences"].reason
    off = {c.check: c for c in run(body, {"grounding": {"enabled": False, "min_support": 0.9}})}
    assert off["grounding:sentences"].passed


def test_placeholder_body_is_blocked_even_when_it_cites_a_document():
    checks = {c.check: c for c in run("<the email body> [D2]", {})}
    assert not checks["grounding:placeholders"].passed


def test_copy_written_by_a_person_is_not_held_to_citations():
    body = "Our stores carry outdoor clothing for every season, and our staff know every trail."
    assert not {c.check: c for c in run(body, {})}["grounding:sentences"].passed
    human = {c.check: c for c in run(body, {}, written_by_person=True)}
    assert human["grounding:sentences"].passed


def test_required_elements_are_looked_for_in_the_footer_too():
    policy = {"required_patterns": {"unsubscribe": "Unsubscribe:"}}
    checks = {c.check: c for c in run("Our trail boots are waterproof. [D2]", policy)}
    assert not checks["policy:required:unsubscribe"].passed
    footer = "--\nUnsubscribe: {{ unsubscribe_url }}"
    checks = {
        c.check: c for c in run("Our trail boots are waterproof. [D2]", policy, footer=footer)
    }
    assert checks["policy:required:unsubscribe"].passed


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"min_suport": 0.5}, "min_suport"),
        ({"min_support": 2}, "min_support"),
        ({"min_support": "high"}, "min_support"),
        ({"max_uncited_words": -1}, "max_uncited_words"),
        ({"enabled": "yes"}, "enabled"),
    ],
)
def test_bad_settings_name_their_key(settings, key):
    with pytest.raises(ConfigurationError) as info:
        grounding.resolve(settings)
    assert info.value.key == f"vars.safety.policy.grounding.{key}"


# -- groundedness detection (Azure AI Content Safety, or offline) ---------------------------------


def test_azure_groundedness_detection_through_the_emulator(tmp_path: Path) -> None:
    from tests.emulator import Emulator
    from tests.test_azure_build import KEYS, azure_env, build, failures, make_project, query

    with Emulator(tls=True, keys=KEYS) as emu:
        project = make_project(tmp_path / "p", emu)
        config = yaml.safe_load((project / "cpo.yml").read_text())
        providers = config["targets"]["azure"]["providers"]
        providers["groundedness"] = {"type": "azure_content_safety", "ca_bundle": emu.ca_pem}
        (project / "cpo.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        invented = "Our jackets were worn by astronauts on the moon landing mission."
        emu.set_faults(service="openai", uncited_claim=invented, body_contains="(loyal)")
        run = build(project, azure_env(emu))
        assert run.success, failures(run)
        calls = [r for r in emu.requests if r.path == "/contentsafety/text:detectGroundedness"]
        assert len(calls) == 18  # every generated variant, not the written control
        assert calls[0].query["api-version"] == "2024-09-15-preview"
        assert calls[0].body["groundingSources"] and "[DOC" not in calls[0].body["text"]
        rows = query(
            project,
            "select variant_id, passed, reason from safety_screenings "
            "where \"check\" = 'grounding:groundedness' order by 1",
        )
        failed = {v for v, passed, _ in rows if not passed}
        assert len(rows) == 18 and failed == {"v_loyal_friendly", "v_loyal_informational",
                                                "v_loyal_urgent"}  # fmt: skip
        assert all(r[2].startswith("ungrounded: ") for r in rows if not r[1])


def corpus_detect(provider) -> tuple[float, float]:
    from cpo.providers.base import GroundednessRequest

    tp = fp = fn = 0
    for item in CORPUS["sentences"]:
        request = GroundednessRequest("k", item["text"], (DOCS[item["cites"]],))
        hit = provider.detect(request).ungrounded
        tp += hit and not item["supported"]
        fp += hit and item["supported"]
        fn += not hit and not item["supported"]
    return tp / max(1, tp + fp), tp / max(1, tp + fn)


def test_groundedness_providers_on_the_labelled_corpus() -> None:
    from cpo.providers.groundedness import OfflineGroundedness, azure_groundedness_factory
    from tests.emulator import Emulator

    assert corpus_detect(OfflineGroundedness()) >= (0.9, 0.9)
    with Emulator() as emu:
        env = {"AZURE_CONTENT_SAFETY_ENDPOINT": emu.url,
               "AZURE_CONTENT_SAFETY_API_KEY": emu.keys.safety}  # fmt: skip
        precision, recall = corpus_detect(azure_groundedness_factory({}, env))
    # The emulator's stand-in verdict, measured so the wire path is exercised end to end.
    assert precision >= 0.7 and recall >= 0.7, (precision, recall)
