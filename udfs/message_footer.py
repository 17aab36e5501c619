"""The compliance footer every message ends with, rendered once from ``prompts/footer.txt``.

The unsubscribe line, the sender's postal address and any legal text are the system's job, never
the model's: ``messages`` appends this footer to every variant's body (control included) before
it fills in merge tags per customer. The footer's variables come from ``vars.messages.footer``.
A footer without ``{{ unsubscribe_url }}`` is an error at compile time (``config``), before any
provider is called.
"""

from __future__ import annotations

import pandas as pd

from cpo.errors import ConfigurationError, ModelError
from cpo.personalization.prompting import PromptRenderer, render_footer
from cpo.personalization.segmentation import merge_tag_names


def _variables(ctx) -> dict:
    return dict(ctx.var("messages.footer", {}, expect=dict))


def config(ctx):
    # Checked whenever the project is compiled: build, compile, plan and ls all stop here.
    try:
        prompts = PromptRenderer(ctx.config.path("prompts"), merge_tag_names(ctx.config))
        render_footer(prompts, _variables(ctx))
    except ModelError as error:  # as is: the message names prompts/footer.txt and its line
        raise ConfigurationError(error.message, path=error.path, line=error.line) from None
    return {}


def model(ctx):
    footer = render_footer(ctx.services.prompts, _variables(ctx))
    return pd.DataFrame({"footer": [footer]}).astype("string")
