"""The interactive prompt of the `orchestrator` command: type a prompt, read the streamed answer.

    await run_repl(pipeline)                                  # a terminal: line editing
    await run_repl(pipeline, stdin=io.StringIO("hi\\n"), stdout=out)   # injected streams

Each answer streams through the pipeline chunk by chunk, so it benefits from the same dedup,
cache, retries and budgets as the web API. The conversation so far goes with each prompt.
`exit`, `quit`, end of input or SIGTERM leave; a pipeline error is printed and the prompt
comes back; Ctrl-C while an answer streams stops that answer, at the prompt it ends the program.

`/good`, `/wrong` and `/stale` (each optionally followed by a comment) rate the last answer
given: recorded by its request id in the pipeline's `FeedbackLog`, what `POST /v1/feedback`
records into (the REPL shares the web API's pipeline, so both see it, and `/v1/status`
counts it). `/good` is score 1 and `/wrong` -1 (the learned router and the semantic entry
that served the answer learn from them); `/stale` says the answer was out of date (score 0:
neither the provider's fault nor a wrong match), the signal the cache TTL law reads. The line
printed says what was recorded and which provider and model the verdict went to.

However the REPL ends (Ctrl-C, Ctrl-D, SIGTERM, an exception), a terminal is left with the
attributes it had when the REPL started: readline switches it to raw mode (`-icanon -echo`)
while it waits for a line, and a reader thread stopped mid-line never switches it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TextIO, TypeVar

from orchestrator.errors import OrchestratorError
from orchestrator.request import InferenceRequest, Message

if TYPE_CHECKING:
    from orchestrator.pipeline import Pipeline

__all__ = ["EXIT_WORDS", "FEEDBACK_COMMANDS", "PROMPT", "run_repl"]

_T = TypeVar("_T")

PROMPT = "› "
EXIT_WORDS = frozenset({"exit", "quit", ":q"})
FEEDBACK_COMMANDS: dict[str, tuple[float, bool]] = {
    "/good": (1.0, False),
    "/wrong": (-1.0, False),
    "/stale": (0.0, True),
}
"""Each rating command's (score, stale)."""


async def _blocking(fn: Callable[[], _T]) -> _T:
    """`fn()` in a daemon thread, awaited without blocking the event loop.

    Not `asyncio.to_thread`: a read blocked in the default executor would keep `asyncio.run`
    from returning after Ctrl-C until the user pressed Enter; a daemon thread is left behind.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            outcome: tuple[_T | None, BaseException | None] = (fn(), None)
        except BaseException as exc:  # handed to the awaiting task
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="orchestrator-repl-input", daemon=True).start()
    return await future


async def _read_line(stdin: TextIO | None, stdout: TextIO) -> str | None:
    """The next line without its newline, or None at end of input."""
    if stdin is None:
        try:
            # input() gives line editing and history when readline is loaded; it blocks, so it
            # runs in a thread while the event loop keeps serving the web API.
            return await _blocking(lambda: input(PROMPT))
        except EOFError:
            return None
    stdout.write(PROMPT)
    stdout.flush()
    line = await _blocking(stdin.readline)
    if not line:
        return None
    return line.rstrip("\r\n")


async def run_repl(
    pipeline: Pipeline,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    session_id: str | None = None,
    max_tokens: int = 1024,
) -> int:
    """Read prompts until `exit`/`quit`/end of input, streaming each answer; return how many
    prompts were answered. `stdin` None reads the terminal through `input()`."""
    out = stdout if stdout is not None else sys.stdout
    if stdin is None:
        with contextlib.suppress(ImportError):  # platforms without readline
            import readline  # noqa: F401  -- importing it turns on line editing for input()
    with _terminal_restored(sys.stdin if stdin is None else stdin), _sigterm_ends() as ended:
        counter = [0]
        try:
            await _prompts(pipeline, stdin, out, counter, session_id, max_tokens)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not ended.is_set() or current is None:
                raise
            current.uncancel()  # our own SIGTERM: leave as at end of input
            out.write("\n")
            out.flush()
        return counter[0]


async def _prompts(
    pipeline: Pipeline,
    stdin: TextIO | None,
    out: TextIO,
    answered: list[int],
    session_id: str | None,
    max_tokens: int,
) -> None:
    """The read-answer loop; `answered[0]` counts the prompts answered so far."""
    session = session_id or "repl-" + uuid.uuid4().hex[:12]
    history: list[Message] = []
    last_answer: str | None = None  # the request id of the last answer given
    while True:
        line = await _read_line(stdin, out)
        if line is None:
            out.write("\n")
            break
        prompt = line.strip()
        if not prompt:
            continue
        if prompt.lower() in EXIT_WORDS:
            break
        command, _, comment = prompt.partition(" ")
        verdict = FEEDBACK_COMMANDS.get(command.lower())
        if verdict is not None:
            out.write(_rate(pipeline, last_answer, command.lower(), *verdict, comment.strip()))
            out.flush()
            continue
        request = InferenceRequest(
            prompt, messages=tuple(history), session_id=session, max_tokens=max_tokens
        )
        answer = asyncio.ensure_future(_stream_answer(pipeline, request, out))
        try:
            with _ctrl_c_cancels(answer):
                text = await answer
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the REPL itself is being stopped
            out.write("\n[interrupted]\n")
            out.flush()
            last_answer = None
            continue
        except OrchestratorError as exc:
            out.write(f"\n[error] {exc}\n")
            out.flush()
            last_answer = None
            continue
        out.write("\n")
        out.flush()
        history += [Message("user", prompt), Message("assistant", text)]
        last_answer = request.request_id
        answered[0] += 1


def _rate(
    pipeline: Pipeline,
    request_id: str | None,
    command: str,
    score: float,
    stale: bool,
    comment: str,
) -> str:
    """Record a rating command's verdict on the last answer; the line that says what was
    recorded."""
    if request_id is None:
        return f"[feedback] no answer to rate: {command} rates the last answer given\n"
    recorded = pipeline.feedback.record(request_id, score, comment or None, stale=stale)
    if recorded.provider is None:
        source = "its answer is no longer remembered"
    else:
        source = f"answered by {recorded.provider}/{recorded.model}"
        if recorded.cached:
            source += ", not by a call of its own (cache or dedup)"
    what = "stale (out of date)" if stale else f"score {score:+g}"
    note = f", comment {comment!r}" if comment else ""
    return f"[feedback] recorded {what}{note} for {request_id}: {source}\n"


async def _stream_answer(pipeline: Pipeline, request: InferenceRequest, out: TextIO) -> str:
    parts: list[str] = []
    async for chunk in pipeline.stream(request):
        parts.append(chunk.text)
        out.write(chunk.text)
        out.flush()
    return "".join(parts)


@contextlib.contextmanager
def _ctrl_c_cancels(answer: asyncio.Future[str]) -> Iterator[None]:
    """While the answer streams, Ctrl-C cancels it (back to the prompt) instead of ending the
    program; the previous handler comes back afterwards. A no-op off the main thread."""
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, answer.cancel)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or Windows
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _terminal_restored(stream: TextIO) -> Iterator[None]:
    """The terminal behind `stream` gets back the attributes it has now, on every way out.
    A no-op when `stream` is not a terminal or the platform has no termios."""
    try:
        import termios
    except ImportError:
        yield
        return
    try:
        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
    # termios.error (a pipe or a file: "Inappropriate ioctl") is no OSError
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation, termios.error):
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError, termios.error):  # the terminal went away
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _sigterm_ends() -> Iterator[threading.Event]:
    """While the REPL runs, SIGTERM ends it as end of input would (the event says it came),
    so the terminal is restored and the web API shuts down cleanly; the previous handler
    comes back afterwards. A no-op off the main thread."""
    ended = threading.Event()
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm() -> None:
        ended.set()
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or Windows
        yield ended
        return
    try:
        yield ended
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
