"""Personalisation: customer sources and segments, prompts and merge tags, grounding and the
screening policy (a domain package on top of the engine)."""
