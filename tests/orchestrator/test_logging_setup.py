"""Logging for the `orchestrator` command: JSON lines, levels, and keys that never show."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from orchestrator import logging_setup
from orchestrator.logging_setup import MASK, SecretFilter, configure_logging, mask_secrets

ANTHROPIC_KEY = "sk-ant-api03-" + "A1b2C3d4" * 6
OPENAI_KEY = "sk-proj-" + "Z9y8X7w6" * 5


@pytest.fixture
def restore_root() -> Iterator[None]:
    """Leave the root logger as the test found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_public_surface() -> None:
    """The module exports exactly its documented names."""
    assert sorted(logging_setup.__all__) == [
        "JsonFormatter",
        "LogFormat",
        "MASK",
        "MAX_PROMPT_LOG_CHARS",
        "PROMPT_LOGGER",
        "SECRET_ENV_VARS",
        "SecretFilter",
        "configure_logging",
        "mask_secrets",
        "prompt_log_text",
    ]


def test_json_format_writes_one_object_per_line(restore_root: None) -> None:
    """LOG_FORMAT=json: each record is one JSON object with time, level, logger, message, extras."""
    out = io.StringIO()
    configure_logging(environ={"LOG_FORMAT": "json"}, stream=out)
    logging.getLogger("orchestrator.test").info("served %s", "req_1", extra={"latency_ms": 4.5})
    logging.getLogger("other").warning("second line")

    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO"
    assert first["logger"] == "orchestrator.test"
    assert first["message"] == "served req_1"
    assert first["latency_ms"] == 4.5
    assert first["time"].endswith("+00:00")
    assert second["message"] == "second line"


def test_json_format_carries_the_exception(restore_root: None) -> None:
    """A logged exception becomes an `exception` field in the same one-line object."""
    out = io.StringIO()
    configure_logging(fmt="json", environ={}, stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert "RuntimeError: boom" in record["exception"]


def test_log_level_sets_the_level(restore_root: None) -> None:
    """LOG_LEVEL=WARNING drops INFO records and keeps WARNING ones."""
    out = io.StringIO()
    configure_logging(environ={"LOG_LEVEL": "warning"}, stream=out)
    logging.getLogger("x").info("quiet")
    logging.getLogger("x").warning("loud")
    assert "quiet" not in out.getvalue()
    assert "loud" in out.getvalue()


def test_log_prompts_lets_the_prompt_log_through_a_higher_level(restore_root: None) -> None:
    """`log_prompts=True` shows `orchestrator.prompts` at INFO even under LOG_LEVEL=WARNING;
    without it the prompt logger follows the level like any other."""
    prompts = logging.getLogger(logging_setup.PROMPT_LOGGER)
    out = io.StringIO()
    configure_logging(environ={"LOG_LEVEL": "WARNING"}, stream=out, log_prompts=True)
    prompts.info("the prompt line")
    logging.getLogger("x").info("other info")
    assert "the prompt line" in out.getvalue() and "other info" not in out.getvalue()
    out = io.StringIO()
    configure_logging(environ={"LOG_LEVEL": "WARNING"}, stream=out)
    prompts.info("hidden prompt line")
    assert "hidden prompt line" not in out.getvalue()


def test_prompt_log_text_masks_keys_and_cuts_long_texts() -> None:
    """Key-shaped strings are masked; past the limit the text is cut and says by how much."""
    text = logging_setup.prompt_log_text("key sk-ant-" + "a" * 30 + " " + "b" * 50, limit=20)
    assert "sk-ant-" not in text and text.startswith("key [REDACTED]")
    assert text.endswith("more chars]")


def test_bad_log_settings_are_named() -> None:
    """An unknown LOG_LEVEL or LOG_FORMAT is a ValueError naming the variable."""
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        configure_logging(environ={"LOG_LEVEL": "chatty"}, stream=io.StringIO())
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        configure_logging(environ={"LOG_FORMAT": "xml"}, stream=io.StringIO())


def test_configuring_twice_replaces_the_handler(restore_root: None) -> None:
    """A second configure_logging call does not double every line."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging(environ={}, stream=first)
    configure_logging(environ={}, stream=second)
    logging.getLogger("x").warning("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1


def test_known_keys_never_reach_the_log(restore_root: None) -> None:
    """Key values given to configure_logging or set in the environment are masked everywhere."""
    out = io.StringIO()
    token = "local-bearer-token-value"
    configure_logging(
        fmt="json",
        secrets=[ANTHROPIC_KEY, None],
        environ={"OPENAI_API_KEY": OPENAI_KEY, "API_KEY": token},
        stream=out,
    )
    log = logging.getLogger("orchestrator.keys")
    log.info("anthropic %s", ANTHROPIC_KEY)
    log.info("config", extra={"header": f"x {OPENAI_KEY} y", "token_hint": token})
    try:
        raise ValueError(f"bad key {ANTHROPIC_KEY}")
    except ValueError:
        log.exception("request failed with %r", {"api_key": token})

    text = out.getvalue()
    for secret in (ANTHROPIC_KEY, OPENAI_KEY, token):
        assert secret not in text
    assert text.count(MASK) >= 5


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        (f"key={ANTHROPIC_KEY}", ANTHROPIC_KEY),
        (f"using {OPENAI_KEY} now", OPENAI_KEY),
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
        ("x-api-key: 0123456789abcdef", "0123456789abcdef"),
        ('{"api_key": "supersecretvalue99"}', "supersecretvalue99"),
        ("token=qwertyuiopasdf", "qwertyuiopasdf"),
    ],
)
def test_key_like_strings_are_masked_without_being_known(text: str, leaked: str) -> None:
    """Strings shaped like API keys or bearer tokens are masked even when nobody listed them."""
    masked = mask_secrets(text)
    assert leaked not in masked
    assert MASK in masked


def test_ordinary_text_is_left_alone() -> None:
    """Prose, request ids and short values pass through unchanged."""
    text = "served req_0123456789abcdef in 12 ms; tokens: 42; task-skill ok"
    assert mask_secrets(text) == text


def test_filter_keeps_every_record() -> None:
    """SecretFilter masks but never drops a record."""
    record = logging.makeLogRecord({"msg": "k=%s", "args": ("abcd-secret",)})
    assert SecretFilter(["abcd-secret"]).filter(record) is True
    assert record.getMessage() == f"k={MASK}"


def test_json_lines_carry_no_terminal_colour_codes(restore_root: None) -> None:
    """uvicorn's coloured copy of its message (`color_message`) and colour codes inside a
    message never reach a JSON line."""
    out = io.StringIO()
    configure_logging(environ={"LOG_FORMAT": "json"}, stream=out)
    # uvicorn's own logger may have been set up not to propagate by an earlier server: its
    # way of logging (a coloured copy of the message in `color_message`) is what matters.
    logging.getLogger("test.uvicorn_like").info(
        "Started server process [%d]", 42,
        extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"})
    logging.getLogger("other").info("\x1b[1mbold\x1b[0m move")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {k: first[k] for k in ("time", "level", "logger", "message")}
    assert first["message"] == "Started server process [42]"
    assert second["message"] == "bold move"
    assert "\x1b" not in out.getvalue() and "\\u001b" not in out.getvalue()
