"""What every test suite shares, loaded before any of them (at the root, not in tests/: a
conftest there would put tests/ on sys.path, where its folders memory_db/, orchestrator/, …
would shadow the installed packages as namespace packages)."""

from __future__ import annotations

import signal

# A shell that starts the suite in the background without job control (`make test &`, a CI
# runner's `sh -c '... &'`) hands it SIGINT ignored, and an ignored signal stays ignored across
# fork and exec: every REPL and server a test starts would then shrug off its Ctrl-C, and the
# tests that press it would hang or fail. A handler of our own is reset to the default in each
# child, so the children start as they would from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
