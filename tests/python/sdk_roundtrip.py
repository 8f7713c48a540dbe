"""Drives pasarela with the official `openai` package; run by tests/gateway/sdk.rs.

Reads OPENAI_BASE_URL and OPENAI_API_KEY from the environment, as the SDK does.
"""

import openai

client = openai.OpenAI(max_retries=0, timeout=30)

messages = [{"role": "user", "content": "hi"}]

done = client.chat.completions.create(model="gpt-test", messages=messages)
print(f"non-stream: {done.choices[0].message.content}")

text, usage = "", None
stream = client.chat.completions.create(
    model="gpt-test", messages=messages, stream=True, stream_options={"include_usage": True}
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage is not None:
        usage = chunk.usage.total_tokens
print(f"stream: {text} usage={usage}")

try:
    client.chat.completions.create(model="gpt-test", messages=messages)
except openai.BadRequestError as e:
    print(f"error: {e.status_code} {e.body['message']}")
