"""The `coordinator` CLI: a thin layer whose output and exit codes scripts can rely on."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.cli import main


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run the CLI in-process in an empty directory; return (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "COORDINATOR_TASKS",
        "COORDINATOR_CONFIG",
        "COORDINATOR_DB_URL",
        "COORDINATOR_LEASE_S",
    ):
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_tasks_add_then_list_json_shows_id_and_state(cli):
    """`tasks add` files a task; `tasks list --json` is an array of objects with id and state."""
    assert cli("tasks", "add", "write docs", "--id", "docs", "--priority", "high")[0] == 0
    code, out, _ = cli("tasks", "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert rows[0]["id"] == "docs" and rows[0]["state"] == "pending"
    assert rows[0]["priority"] == "high"


def test_tasks_add_with_a_known_id_is_refused(cli):
    """Adding a task whose id is already known exits 2 and says so."""
    cli("tasks", "add", "one", "--id", "dup")
    code, _, err = cli("tasks", "add", "two", "--id", "dup")
    assert code == 2
    assert "'dup' is already known" in err


def test_tasks_add_refuses_a_path_traversal_id(cli, tmp_path):
    """An id like ../evil is refused and nothing is written outside the folder."""
    code, _, err = cli("tasks", "add", "x", "--id", "../evil")
    assert code == 2
    assert "id must match" in err
    assert not (tmp_path / "evil.toml").exists()


def test_show_of_a_traversal_id_is_unknown(cli):
    """`tasks show ../../etc/passwd` is simply an unknown task."""
    cli("tasks", "add", "x", "--id", "real")
    code, _, err = cli("tasks", "show", "../../etc/passwd")
    assert code == 2
    assert "no task with id" in err


def test_external_agent_claims_heartbeats_and_completes(cli):
    """claim --json gives id and token; heartbeat and complete with that token work."""
    cli("tasks", "add", "do it", "--id", "job")
    code, out, _ = cli("claim", "--agent", "outside", "--json")
    assert code == 0
    claim = json.loads(out)
    assert claim["id"] == "job" and claim["prompt"] == "do it" and claim["attempt"] == 1
    token = str(claim["token"])
    assert cli("heartbeat", "job", "--token", token)[0] == 0
    assert cli("complete", "job", "--token", token)[0] == 0
    assert json.loads(cli("tasks", "list", "--json")[1])[0]["state"] == "done"


def test_claim_with_nothing_ready_exits_1(cli):
    """claim exits 1 when no task is ready, so scripts can loop on it."""
    cli("tasks", "add", "later", "--id", "later", "--depends-on", "first")
    code, out, err = cli("claim", "--agent", "a")
    assert code == 1 and out == ""
    assert "no task is ready" in err


def test_a_stale_token_cannot_complete(cli):
    """complete with a token that does not hold the lease exits 2 naming the lease problem."""
    cli("tasks", "add", "x", "--id", "job")
    _, out, _ = cli("claim", "--agent", "a")
    task_id, token = out.split()
    code, _, err = cli("complete", task_id, "--token", str(int(token) + 1))
    assert code == 2
    assert "lease on task 'job'" in err


def test_fail_retries_then_fails(cli, tmp_path):
    """fail with a reason sends the task back until max_attempts, then it is failed."""
    (tmp_path / "coordinator.toml").write_text("retry_backoff_s = 0\n")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "f.toml").write_text('prompt = "x"\nmax_attempts = 2\n')
    for expected in ("pending", "failed"):
        _, out, _ = cli("claim", "--agent", "a")
        task_id, token = out.split()
        code, out, _ = cli("fail", task_id, "--token", token, "--reason", "tests red")
        assert code == 0 and out.strip() == f"f: {expected}"
    code, out, _ = cli("tasks", "show", "f")
    assert "failed — failed on attempt 2 of 2: tests red" in out


def test_cancel_and_retry(cli):
    """cancel a pending task; retry brings it back to pending."""
    cli("tasks", "add", "x", "--id", "c")
    assert cli("tasks", "cancel", "c")[1].strip() == "c: cancelled"
    assert cli("tasks", "retry", "c")[1].strip() == "c: pending"
    code, _, err = cli("tasks", "retry", "c")
    assert code == 2 and "cannot retry task 'c': it is pending" in err


def test_rejected_files_are_listed_with_their_reason(cli, tmp_path):
    """A malformed file shows up as rejected, with file, line and field in the reason."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "bad.toml").write_text('prompt = "x"\npriority = "urgent"\n')
    rows = json.loads(cli("tasks", "list", "--state", "rejected", "--json")[1])
    assert rows == [
        {
            "id": "bad.toml",
            "state": "rejected",
            "priority": "",
            "title": "",
            "attempts": 0,
            "reason": rows[0]["reason"],
            "file": "tasks/rejected/bad.toml",
        }
    ]
    assert rows[0]["reason"].startswith("bad.toml:2: field 'priority': expected one of")


def test_status_json_counts_every_state(cli):
    """status --json reports counts for every state."""
    cli("tasks", "add", "x", "--id", "s")
    status = json.loads(cli("status", "--json")[1])
    assert status["counts"] == {
        "pending": 1,
        "claimed": 0,
        "done": 0,
        "failed": 0,
        "cancelled": 0,
        "rejected": 0,
    }


def test_tasks_flag_beats_environment_beats_config_file(cli, tmp_path, monkeypatch):
    """Settings: flag, then environment, then coordinator.toml, then the default."""
    (tmp_path / "coordinator.toml").write_text('tasks = "from-file"\n')
    cli("tasks", "add", "x", "--id", "a")
    assert (tmp_path / "from-file" / "pending" / "a.jsonl").exists()
    monkeypatch.setenv("COORDINATOR_TASKS", str(tmp_path / "from-env"))
    cli("tasks", "add", "x", "--id", "b")
    assert (tmp_path / "from-env" / "pending" / "b.jsonl").exists()
    cli("tasks", "add", "x", "--id", "c", "--tasks", str(tmp_path / "from-flag"))
    assert (tmp_path / "from-flag" / "pending" / "c.jsonl").exists()


def test_a_malformed_config_file_is_named(cli, tmp_path):
    """A bad coordinator.toml value exits 2 naming the file and key."""
    (tmp_path / "coordinator.toml").write_text('lease_s = "soon"\n')
    code, _, err = cli("status")
    assert code == 2
    assert "coordinator.toml: key 'lease_s': expected float, got 'soon'" in err


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["status"],
        ["tasks", "list"],
        ["tasks", "add"],
        ["tasks", "show"],
        ["tasks", "retry"],
        ["tasks", "cancel"],
        ["claim"],
        ["heartbeat"],
        ["complete"],
        ["fail"],
        ["memory", "query"],
        ["memory", "sql"],
        ["tasks", "clear"],
        ["logs"],
    ],
)
def test_every_command_has_help(cli, command):
    """Every command answers --help with a usage line, and every option has help text."""
    from coordinator.cli import _parser

    with pytest.raises(SystemExit) as exit_info:
        cli(*command, "--help")
    assert exit_info.value.code == 0
    parser = _parser()
    for word in command:
        parser = next(
            a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
        ).choices[word]
    silent = [a.dest for a in parser._actions if not a.help and a.dest != "help"]
    assert silent == []


def test_help_does_not_import_heavy_modules(tmp_path):
    """`coordinator --help` loads neither SQLAlchemy nor the pipeline (it must stay fast); the
    leaf modules of shared vocabulary (`orchestrator.request`'s Priority, `memory_db.errors`)
    are cheap and allowed."""
    probe = (
        "import sys; from coordinator.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('sqlalchemy', 'orchestrator.pipeline', 'orchestrator.server',"
        " 'orchestrator.config', 'memory_db.memory', 'memory_db.engine', 'filelock')"
        " if m in sys.modules]\nprint(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=True,
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_run_passes_only_the_variables_named_with_pass_env(cli, tmp_path, monkeypatch):
    """`run --pass-env FOO` lets agents see FOO; BAR, also set, stays with the coordinator."""
    monkeypatch.setenv("FOO", "foo")
    monkeypatch.setenv("BAR", "bar")
    assert cli("tasks", "add", "x", "--id", "seen")[0] == 0
    code, _, err = cli(
        "run",
        "--agent",
        'echo "${FOO-}|${BAR-}"',
        "--pass-env",
        "FOO",
        "--until-empty",
        "--no-memory",
    )
    assert code == 0, err
    assert (tmp_path / "tasks/logs/seen/attempt-1.log").read_text() == "foo|\n"


def test_run_refuses_a_pass_env_entry_that_is_not_a_name(cli):
    """A malformed --pass-env is a clear error (exit 2), before anything runs."""
    code, _, err = cli("run", "--pass-env", "A=B", "--until-empty", "--no-memory")
    assert code == 2
    assert "'A=B' is not an environment variable name" in err


@pytest.mark.parametrize(
    "command",
    [
        ["tasks", "list"],
        ["status"],
        ["tasks", "show", "x"],
        ["claim", "--agent", "a"],
        ["logs", "x"],
        ["tasks", "clear", "--state", "done", "--yes"],
    ],
)
def test_reading_commands_on_a_missing_folder_fail_and_create_nothing(cli, tmp_path, command):
    """A typo in --tasks is a clear error naming the path; no queue appears there."""
    code, out, err = cli(*command, "--tasks", "fleet1/taks")
    assert code == 2 and out == ""
    assert "fleet1/taks: not a task queue" in err
    assert not (tmp_path / "fleet1").exists()


def test_tasks_add_creates_a_missing_queue_and_says_so(cli, tmp_path):
    """`tasks add` into a folder that does not exist makes the queue, and says where."""
    code, _, err = cli("tasks", "add", "x", "--tasks", "new-queue")
    assert code == 0
    assert "created a new task queue in new-queue/" in err
    assert (tmp_path / "new-queue" / "pending").is_dir()


def test_memory_query_without_a_database_fails_and_creates_nothing(cli, tmp_path):
    """`memory query stats` where no memory exists names the path; no database appears."""
    code, _, err = cli("memory", "query", "stats")
    assert code == 2
    assert "no agent memory at .coordinator/memory.db" in err
    assert not (tmp_path / ".coordinator").exists()


def test_tasks_clear_archives_entries_only_when_confirmed(cli, tmp_path):
    """`tasks clear --state cancelled` asks (without a terminal: refuses without --yes);
    with --yes the entries leave the listings and are kept under archive/."""
    cli("tasks", "add", "x", "--id", "gone")
    cli("tasks", "cancel", "gone")
    code, _, err = cli("tasks", "clear", "--state", "cancelled")
    assert code == 2 and "confirm with --yes" in err
    assert cli("tasks", "list", "--state", "cancelled", "--json")[1].count('"gone"') == 1
    code, out, _ = cli("tasks", "clear", "--state", "cancelled", "--yes")
    assert code == 0 and out.startswith("cleared 1 cancelled: gone")
    assert json.loads(cli("tasks", "list", "--json")[1]) == []
    assert (tmp_path / "tasks" / "archive" / "cancelled" / "gone.jsonl").exists()


def test_a_plain_heartbeat_keeps_the_lease_length_of_the_claim(cli):
    """After `claim --lease-s 120`, `heartbeat` renews for 120 s, not the default 60."""
    cli("tasks", "add", "x", "--id", "long")
    _, out, _ = cli("claim", "--agent", "a", "--lease-s", "120")
    token = out.split()[1]
    code, out, _ = cli("heartbeat", "long", "--token", token)
    assert code == 0
    assert int(out.split("for ")[1].rstrip("s\n")) in (119, 120)


def test_tasks_add_sets_every_attempt_field(cli):
    """`tasks add` takes acceptance, max_attempts, timeout_s, agent and tags."""
    cli(
        "tasks",
        "add",
        "x",
        "--id",
        "full",
        "--acceptance",
        "pytest -q",
        "--acceptance",
        "ruff check .",
        "--max-attempts",
        "5",
        "--timeout-s",
        "30",
        "--agent",
        "echo",
        "--tag",
        "docs",
        "--tag",
        "small",
    )
    task = json.loads(cli("tasks", "show", "full", "--json")[1])["task"]
    assert task["acceptance"] == ["pytest -q", "ruff check ."]
    assert (task["max_attempts"], task["timeout_s"], task["agent"]) == (5, 30.0, "echo")
    assert task["tags"] == ["docs", "small"]


def test_config_is_accepted_after_the_subcommand(cli, tmp_path):
    """`coordinator status --config FILE` reads FILE, as `--config FILE status` does."""
    (tmp_path / "other.toml").write_text('tasks = "elsewhere"\n')
    cli("tasks", "add", "x", "--id", "a", "--config", "other.toml")
    assert (tmp_path / "elsewhere" / "pending" / "a.jsonl").exists()
    code, out, _ = cli("--config", "other.toml", "tasks", "list", "--json")
    assert code == 0 and json.loads(out)[0]["id"] == "a"


def test_version_is_printed(cli):
    """`coordinator --version` prints the installed version."""
    with pytest.raises(SystemExit) as info:
        cli("--version")
    assert info.value.code == 0


def test_until_empty_names_the_dependencies_that_never_came(cli):
    """A task waiting for an id no task has is reported by name when --until-empty exits."""
    cli("tasks", "add", "x", "--id", "first")
    cli("tasks", "add", "y", "--id", "second", "--depends-on", "first", "ghost")
    code, _, err = cli("run", "--until-empty", "--no-memory")
    assert code == 1
    assert "second did not run: it waits for ghost (no task has this id)" in err


def test_an_orchestrator_url_that_does_not_answer_is_an_error_at_start(cli):
    """`--orchestrator URL` with nothing listening exits 2 before any attempt is made."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        cli("tasks", "add", "x", "--id", "kept")
        code, _, err = cli(
            "run", "--until-empty", "--no-memory", "--orchestrator", f"http://127.0.0.1:{port}"
        )
    assert code == 2
    assert f"--orchestrator http://127.0.0.1:{port}: nothing answers there" in err
    assert json.loads(cli("tasks", "list", "--json")[1])[0]["attempts"] == 0


def test_logs_shows_an_attempts_output(cli):
    """`logs ID` prints the latest attempt's log; a missing attempt is a clear error."""
    cli("tasks", "add", "hello logs", "--id", "talk")
    assert cli("run", "--until-empty", "--no-memory", "--agent", "echo")[0] == 0
    code, out, _ = cli("logs", "talk")
    assert code == 0 and out == "hello logs"
    code, _, err = cli("logs", "talk", "--attempt", "2")
    assert code == 2 and "no attempt 2" in err


def test_an_unknown_agent_profile_is_refused_at_ingest_naming_file_and_field(cli, tmp_path):
    """`tasks add --agent claud` and a dropped file naming it are both refused at ingest,
    with the profiles that exist; nothing is queued."""
    code, _, err = cli("tasks", "add", "x", "--id", "typo", "--agent", "claud")
    assert code == 2
    assert "typo.toml:" in err and "field 'agent'" in err
    assert "unknown agent profile 'claud'; known profiles are: claude, codex, echo" in err
    (tmp_path / "tasks" / "dropped.toml").write_text('prompt = "x"\nagent = "claud"\n')
    code, out, _ = cli("tasks", "list", "--state", "rejected", "--json")
    [rejected] = json.loads(out)
    assert "dropped.toml:2: field 'agent': unknown agent profile 'claud'" in rejected["reason"]
    assert json.loads(cli("tasks", "list", "--state", "pending", "--json")[1]) == []


def test_external_claims_and_endings_reach_agent_memory(cli):
    """claim / complete / fail made outside the fleet are recorded in agent memory: the agent
    is in `stats`, and `memory query tasks` agrees with `tasks list`."""
    cli("tasks", "add", "first", "--id", "a")
    cli("tasks", "add", "second", "--id", "b", "--max-attempts", "1")
    for verdict in ("complete", "fail"):
        claim = json.loads(cli("claim", "--agent", "outside", "--json")[1])
        extra = ["--reason", "still red"] if verdict == "fail" else []
        assert cli(verdict, claim["id"], "--token", str(claim["token"]), *extra)[0] == 0
    listed = {t["id"]: t["state"] for t in json.loads(cli("tasks", "list", "--json")[1])}
    assert listed == {"a": "done", "b": "failed"}
    remembered = json.loads(cli("memory", "query", "tasks", "--json")[1])
    assert {t["task_id"]: t["state"] for t in remembered} == listed
    attempts = json.loads(cli("memory", "query", "attempts", "--json")[1])
    assert sorted((a["task_id"], a["agent"], a["outcome"]) for a in attempts) == [
        ("a", "outside", "succeeded"),
        ("b", "outside", "failed"),
    ]
    stats = json.loads(cli("memory", "query", "stats", "--json")[1])
    assert [s["agent"] for s in stats] == ["outside"]


def test_an_attempt_claimed_outside_shows_as_running_in_memory(cli):
    """After `claim`, memory has the task claimed and its attempt open (no outcome yet)."""
    cli("tasks", "add", "x", "--id", "live")
    assert cli("claim", "--agent", "outside")[0] == 0
    [task] = json.loads(cli("memory", "query", "tasks", "--json")[1])
    assert task["state"] == "claimed"
    [attempt] = json.loads(cli("memory", "query", "attempts", "--json")[1])
    assert attempt["outcome"] is None and attempt["agent"] == "outside"


def test_an_external_heartbeat_is_counted_on_the_running_attempt(cli):
    """`heartbeat` reaches agent memory: the running attempt counts each renewal and keeps
    the expiry the latest one set."""
    cli("tasks", "add", "x", "--id", "beating")
    claim = json.loads(cli("claim", "--agent", "outside", "--json", "--lease-s", "120")[1])
    for _ in range(2):
        assert cli("heartbeat", "beating", "--token", str(claim["token"]))[0] == 0
    [attempt] = json.loads(cli("memory", "query", "attempts", "--json")[1])
    assert attempt["heartbeats"] == 2 and attempt["last_heartbeat_at"] is not None
    assert cli("heartbeat", "beating", "--token", str(claim["token"]), "--no-memory")[0] == 0
    [attempt] = json.loads(cli("memory", "query", "attempts", "--json")[1])
    assert attempt["heartbeats"] == 2


def test_no_memory_leaves_agent_memory_alone(cli, tmp_path):
    """With --no-memory the external commands write no database."""
    cli("tasks", "add", "x", "--id", "quiet", "--no-memory")
    assert cli("claim", "--agent", "outside", "--no-memory")[0] == 0
    assert not (tmp_path / ".coordinator" / "memory.db").exists()


def test_memory_tables_round_fractions_and_show_local_times(cli):
    """`memory query` tables show rates and durations to two decimals and timestamps as local
    ISO times; --json keeps the exact numbers."""
    from datetime import datetime

    cli("tasks", "add", "x", "--id", "r")
    claim = json.loads(cli("claim", "--agent", "outside", "--json")[1])
    cli("complete", "r", "--token", str(claim["token"]))
    [row] = json.loads(cli("memory", "query", "attempts", "--json")[1])
    table = cli("memory", "query", "attempts")[1]
    local = datetime.fromtimestamp(row["started_at"]).astimezone().isoformat(timespec="seconds")
    assert local in table and str(row["started_at"]) not in table
    assert f"{row['duration_s']:.2f}" in table.split()
    stats = cli("memory", "query", "stats")[1].splitlines()[1].split()
    assert stats[-1] == "1.00"  # success_rate


def test_a_dropped_file_reaches_agent_memory_when_it_is_ingested(cli, tmp_path):
    """A task file dropped into the folder is in agent memory as soon as any command ingests
    it (here `tasks list`), not only once an attempt starts; `memory query tasks` agrees."""
    cli("tasks", "add", "x", "--id", "added")
    (tmp_path / "tasks" / "dropped.toml").write_text('id = "dropped"\nprompt = "y"\n')
    listed = {t["id"]: t["state"] for t in json.loads(cli("tasks", "list", "--json")[1])}
    assert listed == {"added": "pending", "dropped": "pending"}
    remembered = json.loads(cli("memory", "query", "tasks", "--json")[1])
    assert {t["task_id"]: t["state"] for t in remembered} == listed


def test_a_run_records_dropped_tasks_that_never_start(cli, tmp_path):
    """`run` records every task it ingests, also one that never gets an attempt (it waits
    for a dependency that never comes)."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "waits.toml").write_text(
        'id = "waits"\nprompt = "y"\ndepends_on = ["ghost"]\n'
    )
    assert cli("run", "--until-empty", "--agent", "echo")[0] == 1
    [task] = json.loads(cli("memory", "query", "tasks", "--json")[1])
    assert (task["task_id"], task["state"]) == ("waits", "pending")


def test_reading_commands_never_create_agent_memory_for_dropped_files(cli, tmp_path):
    """Ingesting a dropped file records it only in a memory that already exists."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "dropped.toml").write_text('id = "dropped"\nprompt = "y"\n')
    assert cli("tasks", "list")[0] == 0
    assert not (tmp_path / ".coordinator" / "memory.db").exists()


def test_agents_routed_through_an_orchestrator_name_themselves_in_a_header(cli, tmp_path):
    """With `--orchestrator URL` each agent gets `ANTHROPIC_CUSTOM_HEADERS` naming it in
    `x-orchestrator-agent` (its loop, without the pid), so usage is counted per agent, and
    the attempt's task in `x-orchestrator-task`, so its answers are credited to the task."""
    from orchestrator import EchoWorker, Pipeline, PipelineConfig
    from orchestrator.server import ServerThread, create_app

    with ServerThread(create_app(Pipeline(PipelineConfig(), EchoWorker()))) as url:
        cli("tasks", "add", "x", "--id", "named")
        code, _, err = cli(
            "run",
            "--until-empty",
            "--no-memory",
            "--orchestrator",
            url,
            "--agent",
            'printf %s "$ANTHROPIC_CUSTOM_HEADERS"',
        )
    assert code == 0, err
    log = (tmp_path / "tasks/logs/named/attempt-1.log").read_text()
    assert log == "x-orchestrator-agent: agent-1\nx-orchestrator-task: named"


def test_two_machines_inboxes_share_one_queue_in_redis(cli, tmp_path, redis_queue_url):
    """`--queue redis://…#name`: a file dropped into one machine's inbox is run there; the
    other machine (another --tasks folder) lists it done, adds a task, and runs it itself."""
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "hello.toml").write_text('prompt = "hello from here"\n')
    here = ("--queue", redis_queue_url, "--tasks", "here")
    there = ("--queue", redis_queue_url, "--tasks", "there")
    code, _, err = cli("run", *here, "--agent", "echo", "--until-empty", "--no-memory")
    assert code == 0, err
    assert (tmp_path / "here" / "sources" / "hello.toml").exists()
    assert "hello from here" in (tmp_path / "here" / "logs" / "hello" / "attempt-1.log").read_text()
    code, out, _ = cli("tasks", "list", "--json", *there)
    assert code == 0 and [(r["id"], r["state"]) for r in json.loads(out)] == [("hello", "done")]
    assert cli("tasks", "add", "and from there", "--id", "second", *there)[0] == 0
    code, _, err = cli("run", *there, "--agent", "echo", "--until-empty", "--no-memory")
    assert code == 0, err
    assert (tmp_path / "there" / "logs" / "second" / "attempt-1.log").exists()
    code, out, _ = cli("tasks", "show", "second", "--json", *here)
    assert code == 0 and json.loads(out)["state"] == "done"


def test_a_bad_or_unreachable_redis_queue_is_a_clear_error(cli, redis_queue_url):
    """A URL that is no Redis URL, a bad queue name, and a Redis that does not answer are each
    an error naming the setting or the host, never the password in the URL."""
    code, _, err = cli("tasks", "list", "--queue", "http://127.0.0.1:6379/0")
    assert code == 2 and "queue: expected a Redis URL" in err
    code, _, err = cli("tasks", "list", "--queue", "redis://127.0.0.1:6379/0#no/slashes")
    assert code == 2 and "the name after #" in err
    code, _, err = cli("tasks", "list", "--queue", "redis://:sekrit-pw@127.0.0.1:1/0#x")
    assert code == 2 and "127.0.0.1:1/0 did not answer" in err
    assert "sekrit-pw" not in err
