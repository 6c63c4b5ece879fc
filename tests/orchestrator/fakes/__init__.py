"""Fake upstream servers speaking the providers' wire formats, with fault injection.

Each fake is a real aiohttp server on 127.0.0.1 (ephemeral port), started with `async with`:

- `FakeAnthropic` (`/v1/messages`; point `AnthropicWorker(base_url=fake.url)` at it),
  `FakeOpenAI` (`/v1/chat/completions`; `OpenAIWorker(base_url=fake.api_url)`),
  `FakeLlamaCpp` (`/completion`; `LlamaCppWorker(fake.url)`).
- Answers: `fake.reply` (one token per word), streamed or not, with usage; `GET /v1/models`
  (FakeAnthropic, FakeOpenAI) and `GET /health` (FakeLlamaCpp) answer too, `Fail` applying.
- Counters: `request_count`, `requests` (each a `ReceivedRequest`), `disconnects` (clients that
  hung up mid-request); `await wait_for_requests(n)` / `wait_for_disconnects(n)`.
- Faults: `fail_next(*faults)` for the next requests, `fail_always(fault)` until
  `fail_always(None)`; faults are `Fail` (status, Retry-After), `Hang`, `CutStream`,
  `StallStream`, `StreamError`, `Malformed`, `KeepAlive`.
- `hold()` / `release()` keep requests in flight; `stop()` / `restart()` kill the server and
  bring it back on the same port.

Import as `from fakes import ...` (pytest puts `tests/orchestrator` on `sys.path`).
"""

from .anthropic_api import FakeAnthropic
from .faults import (
    CutStream,
    Fail,
    Fault,
    Hang,
    KeepAlive,
    Malformed,
    StallStream,
    StreamError,
)
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
    "KeepAlive",
    "Malformed",
    "ReceivedRequest",
    "StallStream",
    "StreamError",
]
