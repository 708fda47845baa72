"""Streams one chat completion with the official OpenAI Python SDK and prints what it saw.

Usage: regions_stream.py, with SYNAXIS_BASE_URL, SYNAXIS_KEY, SYNAXIS_MODEL and SYNAXIS_CA_CERT
(the PEM file of the CA that signed the gateway's certificate) set. Prints one JSON object: the
streamed text, the reported usage, and the x-synaxis-region, x-request-id and
x-synaxis-cross-border headers.
"""

import json
import os

from openai import DefaultHttpxClient, OpenAI


def main():
    client = OpenAI(
        base_url=os.environ["SYNAXIS_BASE_URL"],
        api_key=os.environ["SYNAXIS_KEY"],
        http_client=DefaultHttpxClient(verify=os.environ["SYNAXIS_CA_CERT"]),
        max_retries=0,
    )
    pieces = []
    usage = None
    with client.chat.completions.with_streaming_response.create(
        model=os.environ["SYNAXIS_MODEL"],
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        region = response.headers.get("x-synaxis-region")
        request_id = response.headers.get("x-request-id")
        cross_border = response.headers.get("x-synaxis-cross-border")
        for chunk in response.parse():
            if chunk.usage is not None:
                usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
    print(
        json.dumps(
            {
                "text": "".join(pieces),
                "usage": usage,
                "region": region,
                "request_id": request_id,
                "cross_border": cross_border,
            }
        )
    )


if __name__ == "__main__":
    main()
