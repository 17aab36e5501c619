"""A safety-judge model behind the emulator's chat route (OpenAI-compatible and Azure).

A chat request is a judge request when its system prompt is CPO's rubric ("safety judge" /
"policy expert") or its model is a guard model (``llama-guard*``, ``shieldgemma*``,
``granite*guardian*``). The verdict is deterministic: the emulator's ``safety_terms`` (the same
words and severities as ``text:analyze``) rate the text. Directives inside the judged text
choose other answer shapes, for tests:

``[[judge:garbage]]`` prose; ``[[judge:refuse]]`` a refusal; ``[[judge:fenced]]`` the JSON in a
Markdown fence with chatter; ``[[judge:missing]]`` only three categories; ``[[judge:string]]``
severities as strings; ``[[judge:out_of_range]]`` a severity of 9; ``[[judge:map]]`` the
``{"Hate": {...}}`` shape; ``[[judge:filter]]`` a ``content_filter`` finish.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.emulator.core import CATEGORIES, EmulatorState, Reply, chat_completion, rate_text

GUARDS = ("llama-guard", "shieldgemma", "granite")
DIRECTIVE = re.compile(r"\[\[judge:(\w+)\]\]")
TEXT = re.compile(r"<text>\n?(.*?)\n?</text>", re.DOTALL)
HAZARD = {"Violence": "S1", "Sexual": "S12", "Hate": "S10", "SelfHarm": "S11"}


def is_judge(body: dict[str, Any]) -> bool:
    """Whether a chat request asks for a safety verdict."""
    model = str(body.get("model", "")).lower()
    if any(g in model for g in GUARDS):
        return True
    system = " ".join(
        str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "system"
    )
    return "safety judge" in system or "policy expert" in system


def chat(state: EmulatorState, body: dict[str, Any], model: str) -> Reply:
    """The judge's chat completion."""
    messages = body.get("messages", [])
    system = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    user = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    match = TEXT.search(user)
    text = match.group(1) if match else user
    directive = (DIRECTIVE.search(text) or [None, ""])[1]
    rated = rate_text(state, text)
    finish = "stop"
    if directive == "filter":
        content, finish = None, "content_filter"
    elif directive == "garbage":
        content = "Looks fine to me, nothing to worry about here!"
    elif directive == "refuse":
        content = "I'm sorry, but I can't help with classifying that content."
    elif "llama-guard" in model.lower():
        unsafe = [HAZARD[c] for c in CATEGORIES if rated[c] >= 4]
        content = "safe" if not unsafe else "unsafe\n" + ",".join(unsafe)
    elif "policy expert" in system:
        category = next((c for c in CATEGORIES if f"Policy ({c})" in system), CATEGORIES[0])
        content = "Yes" if rated[category] >= 4 else "No"
    else:
        content = _json_verdict(rated, directive)
    usage = {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160}
    return chat_completion(model, content, finish=finish, usage=usage)


def _json_verdict(rated: dict[str, int], directive: str) -> str:
    verdicts: list[dict[str, Any]] = [
        {"category": c, "severity": s, "reason": "emulated verdict"} for c, s in rated.items()
    ]
    if directive == "missing":
        verdicts = verdicts[:3]
    elif directive == "string":
        verdicts = [{**v, "severity": str(v["severity"])} for v in verdicts]
    elif directive == "out_of_range":
        verdicts[0]["severity"] = 9
    if directive == "map":
        text = json.dumps({v["category"]: {"severity": v["severity"]} for v in verdicts})
    else:
        text = json.dumps({"verdicts": verdicts})
    if directive == "fenced":
        return f"Here is my assessment:\n```json\n{text}\n```\nLet me know if you need more."
    return text
