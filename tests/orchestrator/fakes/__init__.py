"""Fake upstream servers speaking the providers' wire formats, with fault injection.

async with FakeAnthropic() as upstream:
    upstream.fail_next(Fail(status=429, retry_after="2"))
    worker = AnthropicWorker("sk-test", base_url=upstream.url)
    ...
    assert upstream.request_count == 1
"""

from .anthropic_api import FakeAnthropic
from .faults import CutStream, Fail, Fault, Hang, StallStream, StreamError
from .llamacpp_api import FakeLlamaCpp
from .openai_api import FakeOpenAI
from .upstream import FakeUpstream, ReceivedRequest

__all__ = [
    "CutStream",
    "Fail",
    "FakeAnthropic",
    "FakeLlamaCpp",
    "FakeOpenAI",
    "FakeUpstream",
    "Fault",
    "Hang",
    "ReceivedRequest",
    "StallStream",
    "StreamError",
]
