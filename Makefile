VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install agent-clis test demo demo-fleet clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The dashboard test drives Debian's chromium headless (no browser download at test time).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium

# The real agent CLIs that tests/e2e/test_agent_clis.py runs through the gateway, pinned, in a
# project-local folder (never global); npm comes from Debian when it is missing.
AGENT_CLIS          := .agent-clis
CLAUDE_CODE_VERSION := 2.1.332
CODEX_VERSION       := 0.171.0
AGENT_CLIS_STAMP    := $(AGENT_CLIS)/.installed-$(CLAUDE_CODE_VERSION)-$(CODEX_VERSION)
$(AGENT_CLIS_STAMP):
	command -v npm >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq npm; }
	mkdir -p $(AGENT_CLIS)
	npm install --prefix $(AGENT_CLIS) --no-audit --no-fund --loglevel=error \
	  @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) @openai/codex@$(CODEX_VERSION)
	touch $@

agent-clis: $(AGENT_CLIS_STAMP)

test: install $(CHROMIUM) agent-clis
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

# The self-improvement loop end to end, offline, in .demo/ (see examples/self_improve_demo.py).
demo: install
	$(PY) examples/self_improve_demo.py

# The fleet alone, on a copy of the example tasks so the repository's tasks/ stays clean.
demo-fleet: install
	rm -rf .demo && mkdir -p .demo
	cp tasks/examples/*.toml .demo/
	cd .demo && ../$(VENV)/bin/coordinator run --tasks . --agents 3 --agent echo --until-empty; \
	  echo; ../$(VENV)/bin/coordinator tasks list --tasks . && \
	  echo && ../$(VENV)/bin/coordinator tasks show hello --tasks . && \
	  echo && echo "what the echo agent wrote for 'hello':" && cat logs/hello/attempt-1.log && \
	  echo && echo && ../$(VENV)/bin/coordinator memory query stats

clean:
	rm -rf .demo .venv .pytest_cache .ruff_cache $(AGENT_CLIS)
