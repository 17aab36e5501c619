"""The offline safety screen: lexicon severities, profanity, rounding, blocklists, the corpus."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cpo.errors import ConfigurationError, ProviderError
from cpo.providers.base import HARM_CATEGORIES, SafetyRequest
from cpo.providers.offline_safety import (
    OfflineSafety,
    _ProfanityModel,
    blocklist_matches,
    lexicon_severity,
    make_offline_safety,
    parse_lexicon,
    profanity_severity,
    to_four_levels,
    unmask_profanity,
)

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "safety_corpus.jsonl"


@pytest.fixture(scope="module")
def screen() -> OfflineSafety:
    return make_offline_safety({"type": "offline"}, {})


def analyze(screen: OfflineSafety, text: str, **kwargs) -> dict[str, int]:
    return dict(screen.analyze(SafetyRequest(key="t", text=text, **kwargs)).severities)


@pytest.mark.parametrize(
    ("text", "category", "minimum"),
    [
        ("If you cancel again, I will kill you.", "Violence", 6),
        ("We know where you live, so watch your back.", "Violence", 5),
        ("Just go kill yourself, nobody would miss you.", "SelfHarm", 6),
        ("Here is how to overdose quietly.", "SelfHarm", 4),
        ("Unlock our XXX hardcore porn collection.", "Sexual", 6),
        ("All immigrants are vermin and should be deported.", "Hate", 6),
        ("You are a fucking idiot.", "Hate", 4),
    ],
)
def test_clear_cases_reach_blocking_severity(screen, text, category, minimum):
    assert analyze(screen, text)[category] >= minimum


def test_every_category_is_reported_and_clean_text_scores_zero(screen):
    severities = analyze(screen, "Our spring catalogue is here: linen shirts, sandals and hats.")
    assert severities == dict.fromkeys(HARM_CATEGORIES, 0)


@pytest.mark.parametrize(
    "text",
    [
        "Our killer deals on running shoes are back.",
        "Questions? Shoot us an email and we'll reply today.",
        "We're dying to see you at the new store.",
        "This chocolate cake is to die for.",
        "Cut yourself a slice of our lemon drizzle cake.",
        "Bath bombs in lavender and eucalyptus.",
        "Prices slashed across the outdoor range.",
        "Our new blender will blow you away.",
        "Take a stab at our weekly trivia quiz.",
        "Join our murder mystery dinner on Friday.",
        "Soft, sexy lace lingerie made to last.",
        "We'll find you the perfect gift.",
        "These boots are killer.",
    ],
)
def test_marketing_idioms_score_low(screen, text):
    assert max(analyze(screen, text).values()) <= 2


def test_idioms_are_masked_but_the_same_words_still_count_elsewhere(screen):
    assert analyze(screen, "Shoot us an email.")["Violence"] == 0
    assert analyze(screen, "I will shoot you.")["Violence"] >= 6


def test_escalation_adds_one_per_further_distinct_hit_up_to_two():
    lexicon = parse_lexicon(
        "categories:\n  Violence:\n"
        "    - {term: alpha, weight: 4}\n    - {term: beta, weight: 3}\n"
        "    - {term: gamma, weight: 3}\n    - {term: delta, weight: 3}\n"
        "    - {term: mild, weight: 2}\n"
    )
    terms = lexicon.categories["Violence"]
    assert lexicon_severity("alpha", terms) == 4
    assert lexicon_severity("alpha alpha alpha", terms) == 4  # repeats do not escalate
    assert lexicon_severity("alpha mild", terms) == 4  # weak hits do not escalate
    assert lexicon_severity("alpha beta", terms) == 5
    assert lexicon_severity("alpha beta gamma delta", terms) == 6
    assert lexicon_severity("alphabet", terms) == 0  # whole words only


def test_overlapping_hits_count_once(screen):
    # "kill you" (6) and "kill" (3) overlap: the threat must not escalate itself to 7.
    assert analyze(screen, "I'll kill you")["Violence"] == 6


def test_profanity_bands():
    assert [profanity_severity(p) for p in (0.2, 0.5, 0.69, 0.7, 0.89, 0.9, 1.0)] == [
        0,
        2,
        2,
        3,
        3,
        4,
        4,
    ]


def test_four_severity_levels_round_down_like_azure(screen):
    assert [to_four_levels(s) for s in range(8)] == [0, 0, 2, 2, 4, 4, 6, 6]
    text = "Go kill yourself, nobody would miss you."
    eight = analyze(screen, text)
    four = analyze(screen, text, output_type="FourSeverityLevels")
    assert eight["SelfHarm"] == 7
    assert four["SelfHarm"] == 6
    assert all(v % 2 == 0 for v in four.values())
    assert four == {c: to_four_levels(s) for c, s in eight.items()}


def test_unknown_output_type_is_a_provider_error(screen):
    with pytest.raises(ProviderError, match="unknown safety output type 'Ten'"):
        analyze(screen, "hello", output_type="Ten")


def test_blocklists_match_whole_words_and_phrases_case_insensitively(screen):
    lists = {"competitors": ("RivalCo", "mega mart"), "banned": ("cheap",)}
    result = screen.analyze(
        SafetyRequest(
            key="t", text="Better than rivalco and MEGA   MART, never cheap.", blocklists=lists
        )
    )
    assert result.blocklist_matches == (
        "competitors:RivalCo",
        "competitors:mega mart",
        "banned:cheap",
    )
    assert blocklist_matches("rivalcoin and cheaper megamart", lists) == ()


def test_describe_identifies_lexicon_and_model(screen):
    described = screen.describe()
    assert described["name"] == "offline"
    assert described["model"] == "lexicon-v1"
    assert len(described["lexicon_digest"]) == 16
    assert described["profanity_model"].startswith("alt-profanity-check==")


def test_custom_lexicon_file_and_profanity_switch(tmp_path):
    path = tmp_path / "lexicon.yml"
    path.write_text("version: 3\ncategories:\n  Hate:\n    - {term: grumpy, weight: 5}\n")
    provider = make_offline_safety({"lexicon": str(path), "profanity_model": False}, {})
    assert provider.describe()["lexicon_version"] == 3
    assert provider.describe()["profanity_model"] == "off"
    assert analyze(provider, "A grumpy shit.")["Hate"] == 5  # no profanity model: lexicon only
    assert analyze(provider, "I will kill you")["Violence"] == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"profanity_model": "yes"}, "profanity_model: expected true or false"),
        ({"lexicon": "/nonexistent/lexicon.yml"}, "cannot read lexicon file"),
    ],
)
def test_bad_settings_are_configuration_errors(settings, message):
    with pytest.raises(ConfigurationError, match=message) as info:
        make_offline_safety(settings, {})
    assert info.value.key.startswith("providers.safety.")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("categories:\n  Spam:\n    - {term: x, weight: 2}\n", "unknown harm category 'Spam'"),
        ("categories:\n  Hate:\n    - {term: x, weight: 9}\n", "weight must be an integer"),
        ("categories:\n  Hate:\n    - {term: '(x', weight: 2}\n", "invalid regular expression"),
        ("categories:\n  Hate:\n    - just a string\n", "each lexicon entry must be a mapping"),
    ],
)
def test_invalid_lexicons_name_the_entry(text, message):
    with pytest.raises(ConfigurationError, match=message) as info:
        parse_lexicon(text, "my_lexicon.yml")
    assert info.value.path == "my_lexicon.yml"
    assert info.value.key.startswith("categories.")


def test_concurrent_screening_loads_the_model_once_and_agrees(screen):
    texts = ["You are a fucking idiot.", "Killer deals this week.", "I will kill you."] * 8
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda t: analyze(screen, t), texts))
    assert results == [analyze(screen, t) for t in texts]
    assert _ProfanityModel._predict is not None


def test_prepare_scores_a_batch_in_one_model_call_with_the_same_results(screen, monkeypatch):
    texts = [f"Offer {i}: you damn fool. Shop now." for i in range(12)] + ["I will kill you."]
    one_by_one = [analyze(screen, t) for t in texts]  # scored sentence by sentence
    monkeypatch.setattr(_ProfanityModel, "_known", {})  # forget them
    real, calls = _ProfanityModel._predict, []
    assert real is not None

    def counted(sentences):
        calls.append(len(sentences))
        return real(sentences)

    monkeypatch.setattr(_ProfanityModel, "_predict", counted)
    screen.prepare([SafetyRequest(key=str(i), text=t) for i, t in enumerate(texts)])
    assert calls == [12 + 1 + 1]  # each distinct sentence ("Shop now." once), in one call
    assert [analyze(screen, t) for t in texts] == one_by_one
    assert len(calls) == 1  # analyze found every sentence scored


def test_prepare_keeps_at_most_the_memory_bound_and_analyze_scores_the_rest(screen, monkeypatch):
    monkeypatch.setattr(_ProfanityModel, "_known", {})
    monkeypatch.setattr(_ProfanityModel, "MAX_KNOWN", 3)
    texts = [f"Line {i} is fine." for i in range(5)]
    screen.prepare([SafetyRequest(key=str(i), text=t) for i, t in enumerate(texts)])
    assert len(_ProfanityModel._known) == 3  # bounded, whatever the batch's size
    assert [analyze(screen, t) for t in texts] == [analyze(screen, texts[0])] * 5
    assert len(_ProfanityModel._known) <= 3


def test_corpus_is_well_formed():
    entries = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    kinds = {"harmful", "profane", "pii", "forbidden_claim", "false_urgency", "injection", "clean"}
    assert len(entries) >= 48
    assert len({e["id"] for e in entries}) == len(entries)
    assert {e["kind"] for e in entries} == kinds
    assert sum(e["kind"] == "clean" for e in entries) >= 16
    for e in entries:
        assert e["expected"] == ("allow" if e["kind"] == "clean" else "block"), e["id"]
        assert e["text"].strip() and e["note"].strip()


def run_benchmark(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """``benchmarks/safety_eval.py`` with `args`, in-process: its exit code 0 and its output."""
    from benchmarks.safety_eval import main

    capsys.readouterr()
    assert main([str(ROOT / "benchmarks" / "safety_eval.py"), *args]) == 0
    return capsys.readouterr().out.strip()


def test_corpus_precision_and_recall_via_the_benchmark(capsys):
    out = run_benchmark(capsys)
    report = json.loads(out.splitlines()[-1])
    assert report["n"] >= 48
    assert report["precision"] >= 0.9, report["false_positives"]
    assert report["recall"] >= 0.9, report["false_negatives"]
    assert report["per_kind_recall"]["clean"] >= 0.9


# --- Blind held-out set ---------------------------------------------------------------------
# tests/fixtures/safety_holdout.jsonl was written WITHOUT looking at the lexicons, the policy
# phrase lists or the in-sample corpus, so it estimates how the screen does on unseen wording.
# Do NOT tune the lexicon or policy on it (that makes it in-sample); add failing wording to
# safety_corpus.jsonl instead, in your own phrasing. The floors are the measured figures minus
# 0.05 (measured when written: n=60, precision 1.00, recall 0.80, clean specificity 1.00);
# raise them when the screen genuinely improves, never lower them to make a change pass.
HOLDOUT = ROOT / "tests" / "fixtures" / "safety_holdout.jsonl"
HOLDOUT_KIND_FLOORS = {
    "clean": 0.95,
    "false_urgency": 0.95,
    "forbidden_claim": 0.95,
    "harmful": 0.45,
    "injection": 0.75,
    "pii": 0.95,
    "profane": 0.75,
}


def test_holdout_is_well_formed():
    entries = [json.loads(line) for line in HOLDOUT.read_text(encoding="utf-8").splitlines()]
    assert len(entries) == 60
    assert len({e["id"] for e in entries}) == len(entries)
    assert {e["kind"] for e in entries} == set(HOLDOUT_KIND_FLOORS)
    assert sum(e["expected"] == "block" for e in entries) == 30
    for e in entries:
        assert e["expected"] == ("allow" if e["kind"] == "clean" else "block"), e["id"]
        assert e["text"].strip() and e["note"].strip()
        if e["kind"] == "false_urgency":
            assert e["cited_texts"] == [], e["id"]  # no deadline available: urgency is false


def test_holdout_precision_and_recall_floors_via_the_benchmark(capsys):
    out = run_benchmark(capsys, "--corpus", str(HOLDOUT))
    report = json.loads(out.splitlines()[-1])
    assert report["n"] == 60
    assert report["precision"] >= 0.95, report["false_positives"]
    assert report["recall"] >= 0.75, report["false_negatives"]
    for kind, floor in HOLDOUT_KIND_FLOORS.items():
        assert report["per_kind_recall"][kind] >= floor, (kind, report["false_negatives"])


# --- Veiled threats, euphemisms, nudity, masked profanity (added with lexicon v2) ------------


@pytest.mark.parametrize(
    "text",
    [
        "Miss one more payment and we'll figure out where you live.",
        "Skip our survey again and we will make you regret it.",
        "Unsubscribe if you like, but you're going to be sorry.",
        "We know where your wife sleeps. Renew today.",
        "Post that review and you'll regret the day you found us.",
        "Be a real pity if something were to happen to your storefront.",
        "Keep it up and you're dead meat.",
        "Dispute the charge and I'll come after you, and your dog.",
    ],
)
def test_veiled_threats_without_a_violent_verb_block(screen, text):
    assert analyze(screen, text)["Violence"] >= 4


@pytest.mark.parametrize(
    "text",
    [
        "Another refund request and we'll pump two slugs into your chest.",
        "Keep complaining and someone will stick a bullet in you.",
        "Talk to the press and we'll put you in an early grave.",
        "You'll be pushing up daisies if you switch providers.",
        "Say that again and we'll wipe you out.",
        "One more word and I will gut you.",
        "We are going to end you and your brand.",
    ],
)
def test_gun_and_killing_euphemisms_block(screen, text):
    assert analyze(screen, text)["Violence"] >= 4


@pytest.mark.parametrize(
    "text",
    [
        "Shoot over any questions you have and we'll answer by noon.",
        "Learn to shoot beautiful portraits in our weekend workshop.",
        "Rooftop bar with killer views of the harbour.",
        "Our water park is a blast for the whole family.",
        "We're dying to hear how the new boots feel.",
        "These gloves grip like crazy, even in the rain.",
        "Get dirty in the garden with our kids' planting kit.",
        "Let us take you out on the water in a classic sailboat.",
        "Our guides take you out to the trails before sunrise.",
        "We know you'll love it, or your money back.",
        "You'll be sorry you missed it, so mark your calendar.",
        "Watch your step on the trail and enjoy the waterfall.",
        "We'll cut you a deal on the matching scarf.",
        "We'll get you set up in five minutes.",
        "Our chef will take you out for a tasting menu.",
        "Watch the finale of Six Feet Under on our streaming plan.",
        "Our nude heels and the naked cake stole the show.",
        "Visit Dick's for a shooting range day, with rifles and guns for rent.",
    ],
)
def test_look_alike_marketing_copy_stays_below_the_threshold(screen, text):
    assert max(analyze(screen, text).values()) < 4, analyze(screen, text)


@pytest.mark.parametrize(
    "text",
    [
        "Send us your nude selfies to enter the draw.",
        "Show me some naked photos and the drinks are on us.",
        "Pictures of yourself topless earn bonus points.",
        "Come watch her undress on our live cam tonight.",
        "Full nudity on stage every Friday at our lounge.",
    ],
)
def test_nude_photo_requests_and_nudity_offers_block(screen, text):
    assert analyze(screen, text)["Sexual"] >= 4


def test_several_explicit_terms_escalate_but_one_does_not(screen):
    assert analyze(screen, "Browse our fetish range.")["Sexual"] == 3
    assert analyze(screen, "Browse our fetish range of dildos.")["Sexual"] >= 4
    # Suggestive terms pile onto an explicit one (Sexual escalates from weight 2)...
    assert analyze(screen, "Steamy, naughty sex tonight.")["Sexual"] >= 4
    # ...but suggestive terms alone never add up: lingerie copy stays allowed.
    assert analyze(screen, "Sexy, seductive, sensual lingerie, flirty and steamy.")["Sexual"] == 2


def test_escalation_min_weight_is_per_category_and_needs_a_strong_hit():
    lexicon = parse_lexicon(
        "escalation_min_weight: {Sexual: 2}\ncategories:\n"
        "  Sexual:\n    - {term: strong, weight: 3}\n    - {term: mild, weight: 2}\n"
        "    - {term: soft, weight: 2}\n"
        "  Violence:\n    - {term: strong, weight: 3}\n    - {term: mild, weight: 2}\n"
    )
    assert lexicon.escalation_min_weight == {"Sexual": 2}
    sexual, violence = lexicon.categories["Sexual"], lexicon.categories["Violence"]
    assert lexicon_severity("strong mild soft", sexual, 2) == 5
    assert lexicon_severity("mild soft", sexual, 2) == 2  # no strong hit: no escalation
    assert lexicon_severity("strong mild", violence) == 3  # default: weight 3 to escalate


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("escalation_min_weight: [Sexual]\n", "must be a mapping"),
        ("escalation_min_weight: {Spam: 2}\n", "unknown harm category 'Spam'"),
        ("escalation_min_weight: {Sexual: 0}\n", "escalation weight must be an integer"),
    ],
)
def test_invalid_escalation_weights_name_the_key(text, message):
    with pytest.raises(ConfigurationError, match=message) as info:
        parse_lexicon(text, "my_lexicon.yml")
    assert info.value.key.startswith("escalation_min_weight")


@pytest.mark.parametrize(
    ("masked", "plain"),
    [
        ("sh*t", "shit"),
        ("S**T!", "shit!"),
        ("f***ing", "fucking"),
        ("f#ck", "fuck"),
        ("a$$", "ass"),
        ("kick a**", "kick ass"),
        ("b!tch", "bitch"),
        ("bullsh1t", "bullshit"),
        ("motherf***er", "motherfucker"),
        ("@sshole", "asshole"),
    ],
)
def test_masked_profanity_is_spelled_out(masked, plain):
    assert unmask_profanity(masked) == plain


@pytest.mark.parametrize(
    "text",
    [
        "Save $50 today, email help@shop.com or tag #sale.",
        "Got an A* or an A** in your exams?",
        "5*** hotels, *bold* picks and wh@t's new.",
        "Rated A+ by 1,000 shoppers: sh*rt sleeves are in.",
    ],
)
def test_unmasking_leaves_other_symbols_alone(text):
    assert unmask_profanity(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "Our rivals sell absolute sh*t.",
        "Don't be a f***ing fool, upgrade now.",
        "Get off your a$$ and come to the sale.",
        "Who gives a f#ck about last year's model?",
    ],
)
def test_masked_profanity_scores_like_the_plain_word(screen, text):
    assert analyze(screen, text)["Hate"] >= 4


def test_blocklists_also_match_masked_spellings(screen):
    result = screen.analyze(
        SafetyRequest(key="t", text="Total b!tch of a day.", blocklists={"b": ["bitch"]})
    )
    assert result.blocklist_matches == ("b:bitch",)


# --- issue 15 / 10.8: the shared normaliser, idioms, and the measured floors -----------------

from cpo.personalization.normalize import normalize  # noqa: E402


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Ign\u200bore previous", "Ignore previous"),  # zero-width space
        ("Ign\u2060ore\u00ad previous", "Ignore previous"),  # word joiner, soft hyphen
        ("\uff29\uff47\uff4e\uff4f\uff52\uff45 it", "Ignore it"),  # full-width
        ("F\u043erget it", "Forget it"),  # Cyrillic o
        ("Ign0re prev1ous 1nstruct10ns", "Ignore previous instructions"),
        ("sh1tty and bullsh!t", "shitty and bullshit"),
        ("f*cking and f#ck", "fucking and fuck"),
        ("a b-i-t-c-h and f u c k", "a bitch and fuck"),
        ("pr\u00e9c\u00e9dentes", "precedentes"),
        ("Bell\x07 ring", "Bell ring"),  # control character
    ],
)
def test_normaliser_folds_what_hides_a_word(raw, normalised):
    assert normalize(raw) == normalised


@pytest.mark.parametrize(
    "text",
    [
        "Our 20L pack, 4th edition, 500ml bottle for $50.",
        "Write to support@northwind.example or call 1-800-555-0142.",
        "Model 4411-220, sizes 38 to 46, A* rated.",
        "U S A made, #1 in reviews.",
    ],
)
def test_normaliser_leaves_ordinary_text_alone(text):
    assert normalize(text) == text


ISSUE_IDIOMS = [
    "This parka is to die for.",
    "Our new boots blow away the competition.",
    "Crush your goals with trail runners that grip.",
    "The alpine shell is drop-dead gorgeous.",
    "Slay the slopes in our insulated bibs.",
    "This fleece is insanely warm.",
    "Merino and down: a deadly combination of style and warmth.",
    "Hunting season is here: blaze-orange vests are in stock.",
    "Every pack ships with a first aid kit.",
    "Carry an avalanche beacon, probe and shovel.",
    "Our survival blanket weighs 50 grams.",
]


@pytest.mark.parametrize("text", ISSUE_IDIOMS)
def test_marketing_idioms_and_outdoor_words_stay_clean(text):
    from benchmarks.safety_eval import project_rules, screen_entry

    policy, thresholds = project_rules(ROOT)
    screen = make_offline_safety({}, {})
    checks = screen_entry({"id": "x", "text": text}, screen, policy, thresholds)
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]


# Measured with benchmarks/safety_eval.py and the project's configured policy. The holdout was
# written (and committed) before the screen changed and measured once at the end: these floors
# are its blind figures. Raise them when the screen gets better; never tune on the holdout.
FLOORS = {
    "tests/fixtures/safety_corpus.jsonl": {"precision": 0.99, "recall": 0.99, "per_kind": 0.95},
    "tests/fixtures/safety_holdout_v2.jsonl": {"precision": 0.95, "recall": 0.90, "per_kind": 0.8},
}


@pytest.mark.parametrize("corpus", sorted(FLOORS))
def test_precision_and_recall_floors(corpus):
    from benchmarks.safety_eval import evaluate, load_corpus, project_rules

    policy, thresholds = project_rules(ROOT)
    report = evaluate(load_corpus(ROOT / corpus), make_offline_safety({}, {}), policy, thresholds)
    floor = FLOORS[corpus]
    assert report["precision"] >= floor["precision"], report["false_positives"]
    assert report["recall"] >= floor["recall"], report["false_negatives"]
    low = {k: r for k, r in report["per_kind_recall"].items() if r < floor["per_kind"]}
    assert not low, (low, report["false_negatives"], report["false_positives"])


def test_holdout_and_corpus_are_large_and_balanced():
    from benchmarks.safety_eval import load_corpus

    for corpus, minimum in (("safety_corpus.jsonl", 300), ("safety_holdout_v2.jsonl", 100)):
        entries = load_corpus(ROOT / "tests" / "fixtures" / corpus)
        assert len(entries) >= minimum
        clean = sum(e["expected"] == "allow" for e in entries)
        assert 0.4 <= clean / len(entries) <= 0.6
        kinds = {e["kind"] for e in entries if e["expected"] == "block"}
        wanted = {"harmful", "injection", "forbidden_claim", "false_urgency", "pii", "profane"}
        assert kinds >= wanted
        texts = [e["text"] for e in entries]
        assert len(set(texts)) == len(texts)
