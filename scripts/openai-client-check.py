#!/usr/bin/env python3
"""Checks `mtl serve` with the `openai` Python package's client (pip install openai).

    target/release/mtl serve --model models/all-MiniLM-L6-v2 --port 8080 &
    python3 scripts/openai-client-check.py http://127.0.0.1:8080

Sends the same sentences through `client.embeddings.create` (which asks for base64 by
default) and through TEI's /embed, and prints the largest difference (0 when they agree).
"""
import json
import sys
import urllib.request

from openai import OpenAI

base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
sentences = ["The weather is lovely today.", "It is sunny outside.", "He drove to the stadium."]
client = OpenAI(base_url=f"{base}/v1", api_key="not-needed")
answer = client.embeddings.create(model="all-MiniLM-L6-v2", input=sentences)
request = urllib.request.Request(
    f"{base}/embed", data=json.dumps({"inputs": sentences}).encode(),
    headers={"content-type": "application/json"})
tei = json.load(urllib.request.urlopen(request, timeout=30))
worst = max(abs(a - b) for d, t in zip(answer.data, tei) for a, b in zip(d.embedding, t))
print(f"openai {__import__('openai').__version__}: {len(answer.data)} embeddings of "
      f"{len(answer.data[0].embedding)} values, model {answer.model!r}, "
      f"usage {answer.usage.prompt_tokens} prompt tokens; largest difference to /embed {worst:.2e}")
assert [d.index for d in answer.data] == [0, 1, 2]
assert worst <= 1e-6
