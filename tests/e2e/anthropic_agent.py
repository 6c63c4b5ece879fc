"""A minimal agent: sends its prompt (stdin) to Claude through the Anthropic SDK, prints the
answer. The SDK finds the server and key in ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY."""

import os
import sys

import anthropic

print(f"key: {os.environ['ANTHROPIC_API_KEY']}", file=sys.stderr)  # which key the agent holds

prompt = sys.stdin.read()
client = anthropic.Anthropic(max_retries=0)
message = client.messages.create(
    model="claude-test", max_tokens=64, messages=[{"role": "user", "content": prompt}]
)
print(message.content[0].text)
