"""The prompt optimizer in the pipeline: a request that opts in (`metadata["optimize_prompt"]`)
reaches the provider optimized; one that does not, or a server with `prompt_optimizer` off,
reaches it as written. The echo provider answers with the last user turn it received."""

from __future__ import annotations

import asyncio

from intelligence.optimize import OPTIMIZE_PROMPT, PromptRewriter
from orchestrator.assembly import build_pipeline
from orchestrator.request import InferenceRequest, Message
from orchestrator.settings import ServerSettings

CODE = "```python\nx  =  1    # kept as written\n```"
WRITTEN = f"Fix   the    bug   in  step 42.\n\n\n\n\n{CODE}"
OPTIMIZED = f"Fix the bug in step 42.\n\n{CODE}"


def received(settings: ServerSettings, request: InferenceRequest) -> tuple[str, int]:
    async def run() -> tuple[str, int]:
        async with build_pipeline(settings) as pipeline:
            response = await pipeline.infer(request)
            return response.text, response.usage.input_tokens

    return asyncio.run(run())


def settings(**kw: bool) -> ServerSettings:
    return ServerSettings(provider="echo", semantic_dedup=False, **kw)


def test_an_opted_in_prompt_reaches_the_provider_optimized() -> None:
    opted = InferenceRequest(prompt=WRITTEN, max_tokens=512, metadata={OPTIMIZE_PROMPT: "1"})
    text, tokens = received(settings(), opted)
    assert text == OPTIMIZED
    plain_text, plain_tokens = received(settings(), InferenceRequest(prompt=WRITTEN,
                                                                     max_tokens=512))
    assert plain_text == WRITTEN  # no opt-in: as written
    assert tokens < plain_tokens


def test_the_setting_turns_it_off() -> None:
    opted = InferenceRequest(prompt=WRITTEN, max_tokens=512, metadata={OPTIMIZE_PROMPT: "1"})
    text, _ = received(settings(prompt_optimizer=False), opted)
    assert text == WRITTEN


def test_turns_are_optimized_one_for_one_and_counted() -> None:
    rewriter = PromptRewriter()
    block = "The project builds with make; the tests run with pytest and ruff lints. " * 4
    request = InferenceRequest(
        messages=(Message("user", block + "\n\nFirst question?"),
                  Message("assistant", "An answer."),
                  Message("user", block + "\n\nSecond   question?")),
        metadata={OPTIMIZE_PROMPT: "true"},
    )
    out = rewriter(request)
    assert len(out.messages) == 3 and out.messages[1].content == "An answer."
    assert block not in out.messages[2].content and "Second question?" in out.messages[2].content
    assert out.request_id == request.request_id
    assert rewriter.requests_optimized == 1 and rewriter.tokens_saved_total > 0
    assert rewriter(InferenceRequest(prompt="as    is")).prompt == "as    is"
