"""Drives synaxisd with the official OpenAI Python SDK and prints what it saw as one JSON object.

Usage: openai_sdk_e2e.py use|rejected, with SYNAXIS_BASE_URL, SYNAXIS_KEY and SYNAXIS_MODEL set.
The Rust end-to-end test runs it and asserts on the printed values.
"""

import json
import os
import sys

import openai
from openai import OpenAI

MESSAGES = [{"role": "user", "content": "Say hello"}]


def error_name(call):
    """Returns the class name of the SDK error that `call` raises, or None when it succeeds."""
    try:
        call()
    except openai.APIError as error:
        return type(error).__name__
    return None


def use_key(client, model):
    result = {}

    completion = client.chat.completions.create(
        model=model, messages=MESSAGES, extra_body={"synaxis_probe": {"kept": True}}
    )
    result["chat_text"] = completion.choices[0].message.content
    result["chat_usage"] = [completion.usage.prompt_tokens, completion.usage.completion_tokens]

    pieces = []
    usage_chunks = 0
    for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
        if chunk.usage is not None or not chunk.choices:
            usage_chunks += 1
            continue
        pieces.append(chunk.choices[0].delta.content or "")
    result["stream_text"] = "".join(pieces)
    result["stream_usage_chunks"] = usage_chunks

    reported = None
    for chunk in client.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ):
        if chunk.usage is not None:
            reported = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
    result["stream_reported_usage"] = reported

    result["models"] = sorted(model.id for model in client.models.list())
    return result


def main():
    phase = sys.argv[1]
    base_url = os.environ["SYNAXIS_BASE_URL"]
    key = os.environ["SYNAXIS_KEY"]
    model = os.environ["SYNAXIS_MODEL"]
    client = OpenAI(base_url=base_url, api_key=key, max_retries=0)

    if phase == "use":
        result = use_key(client, model)
        wrong_key = key[:-1] + ("A" if key[-1] != "A" else "B")
        wrong = OpenAI(base_url=base_url, api_key=wrong_key, max_retries=0)
        result["wrong_key_error"] = error_name(lambda: wrong.models.list())
    elif phase == "rejected":
        result = {
            "revoked_key_error": error_name(
                lambda: client.chat.completions.create(model=model, messages=MESSAGES)
            )
        }
    else:
        sys.exit(f"unknown phase {phase!r}: use `use` or `rejected`")

    print(json.dumps(result))


if __name__ == "__main__":
    main()
