"""What the official OpenAI and Anthropic SDKs hand back when pointed at Portico.

Run by the end-to-end test `ai_sdk::the_official_sdks_work_through_portico` (crates/portico/
tests/it/ai_sdk.rs), which starts Portico with mock providers and, for the scenarios that
need one, scripts the providers' failures before asking for the scenario:

    python sdk_checks.py <portico url>      # then one scenario name per line on stdin

Each scenario asserts on what the SDK returns to its caller and answers one line, `<name>: ok`
or `<name>: FAILED: <the first difference>`. (One process runs them all: importing the SDKs
takes seconds.) The mocks answer "Hello from <provider>: <last user text>", call the first tool
with {"city": "Paris"}, and count 14 prompt tokens (3 cached) and 7 completion tokens.
"""

import json
import os
import sys

import anthropic
import openai

URL = sys.argv[1]

# The key of a Portico consumer: OpenAI's SDK sends it as a bearer token, Anthropic's as x-api-key.
KEY = os.environ["PORTICO_KEY"]
oa = openai.OpenAI(base_url=f"{URL}/v1", api_key=KEY, max_retries=0)
an = anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0)
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
HI = [{"role": "user", "content": "hi"}]


class Difference(Exception):
    pass


def equal(got, wanted, what):
    if got != wanted:
        raise Difference(f"{what}: got {got!r}, wanted {wanted!r}")


def openai_chat():
    for model, provider in [("gpt", "openai-mock"), ("claude", "anthropic-mock")]:
        answer = oa.chat.completions.create(model=model, messages=HI)
        equal(answer.choices[0].message.content, f"Hello from {provider}: hi", f"{model} content")
        equal(answer.choices[0].finish_reason, "stop", f"{model} finish reason")
        equal(answer.usage.prompt_tokens, 14, f"{model} prompt tokens")
        equal(answer.usage.prompt_tokens_details.cached_tokens, 3, f"{model} cached tokens")
        equal(answer.usage.total_tokens, 21, f"{model} total tokens")
        raw = oa.chat.completions.with_raw_response.create(model=model, messages=HI)
        equal(raw.headers.get("x-portico-provider"), {"gpt": "oa", "claude": "an"}[model], f"{model} provider header")


def openai_stream():
    for model, provider in [("gpt", "openai-mock"), ("claude", "anthropic-mock")]:
        text, usage, finish = "", None, None
        stream = oa.chat.completions.create(model=model, messages=HI, stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        equal(text, f"Hello from {provider}: hi", f"{model} streamed text")
        equal(finish, "stop", f"{model} streamed finish reason")
        equal((usage.prompt_tokens, usage.completion_tokens), (14, 7), f"{model} streamed usage")


def openai_stream_without_usage():
    # Portico asks the provider for usage anyway, to count it, and keeps the usage chunk
    # (whose choices are empty) from a client that did not ask: code that reads
    # chunk.choices[0] keeps working.
    text = ""
    for chunk in oa.chat.completions.create(model="gpt", messages=HI, stream=True):
        equal(chunk.usage, None, "usage nobody asked for")
        text += chunk.choices[0].delta.content or ""
    equal(text, "Hello from openai-mock: hi", "streamed text")


def openai_budget_spent():
    # Set up by the test: a budget of one token a day for this consumer. The first call
    # crosses it and is answered; the next is refused, and the SDK, though allowed two
    # retries, does not retry (`x-should-retry: false`): the budget renews only tomorrow.
    sent = []
    client = openai.OpenAI(base_url=f"{URL}/v1", api_key=KEY, max_retries=2,
                           http_client=openai.DefaultHttpxClient(event_hooks={"request": [sent.append]}))
    client.chat.completions.create(model="gpt", messages=HI)
    try:
        client.chat.completions.create(model="gpt", messages=HI)
        raise Difference("a call past the budget was answered")
    except openai.RateLimitError as error:
        equal(error.code, "budget_exceeded", "budget error code")
        equal(len(sent), 2, "requests sent (no retry of the refused one)")


def openai_tools():
    for model in ["gpt", "claude"]:
        answer = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER])
        call = answer.choices[0].message.tool_calls[0]
        equal((call.function.name, json.loads(call.function.arguments)), ("weather", {"city": "Paris"}), f"{model} tool call")
        equal(answer.choices[0].finish_reason, "tool_calls", f"{model} finish reason")
        # The SDK's own stream helper assembles the fragments.
        with oa.chat.completions.stream(model=model, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER]) as stream:
            final = stream.get_final_completion()
        call = final.choices[0].message.tool_calls[0]
        equal((call.function.name, json.loads(call.function.arguments)), ("weather", {"city": "Paris"}), f"{model} streamed tool call")
        # The tool's result goes back, and the model answers in text.
        history = [{"role": "user", "content": "weather?"}, answer.choices[0].message.model_dump(exclude_none=True),
                   {"role": "tool", "tool_call_id": answer.choices[0].message.tool_calls[0].id, "content": "18C"}]
        again = oa.chat.completions.create(model=model, messages=history, tools=[WEATHER])
        equal(again.choices[0].message.content.split(":")[0], "Hello from " + {"gpt": "openai-mock", "claude": "anthropic-mock"}[model], f"{model} after the tool result")


def openai_embeddings():
    # The SDK asks for base64 unless told otherwise, and decodes it.
    answer = oa.embeddings.create(model="gpt", input=["a", "b"])
    equal([round(x, 4) for x in answer.data[1].embedding], [0.5, -1.25, 1.0], "base64 embedding")
    answer = oa.embeddings.create(model="gpt", input="a", encoding_format="float")
    equal(answer.data[0].embedding, [0.5, -1.25, 0.0], "float embedding")


def openai_errors():
    try:
        openai.OpenAI(base_url=f"{URL}/v1", api_key="not-a-consumer-key", max_retries=0).chat.completions.create(model="gpt", messages=HI)
        raise Difference("an unknown key was let through")
    except openai.AuthenticationError as error:
        equal(error.status_code, 401, "unknown key status")
    try:
        oa.chat.completions.create(model="nope", messages=HI)
        raise Difference("an unknown model was answered")
    except openai.NotFoundError as error:
        equal(error.status_code, 404, "unknown model status")
        equal(error.code, "model_not_found", "unknown model code")


def openai_rate_limited():
    # Scripted: the Anthropic mock answers 429 once.
    try:
        oa.chat.completions.create(model="claude", messages=HI)
        raise Difference("a rate-limited request was answered")
    except openai.RateLimitError as error:
        equal(error.status_code, 429, "rate limit status")


def openai_fallback():
    # Scripted: the OpenAI mock answers 500 once; `both` falls back to Anthropic.
    raw = oa.chat.completions.with_raw_response.create(model="both", messages=HI)
    equal(raw.headers.get("x-portico-provider"), "an", "fallback provider")
    equal(raw.parse().choices[0].message.content, "Hello from anthropic-mock: hi", "fallback content")


def anthropic_messages():
    for model, provider in [("claude", "anthropic-mock"), ("gpt", "openai-mock")]:
        answer = an.messages.create(model=model, max_tokens=100, messages=HI)
        equal(answer.content[0].text, f"Hello from {provider}: hi", f"{model} text")
        equal(answer.stop_reason, "end_turn", f"{model} stop reason")
        usage = answer.usage
        equal((usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens), (11, 3, 7), f"{model} usage")


def anthropic_stream():
    for model, provider in [("claude", "anthropic-mock"), ("gpt", "openai-mock")]:
        with an.messages.stream(model=model, max_tokens=100, messages=HI) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        equal(text, f"Hello from {provider}: hi", f"{model} streamed text")
        equal((final.usage.input_tokens, final.usage.output_tokens), (11, 7), f"{model} streamed usage")
        equal(final.stop_reason, "end_turn", f"{model} streamed stop reason")


def anthropic_tools_and_thinking():
    tool = {"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    for model in ["claude", "gpt"]:
        with an.messages.stream(model=model, max_tokens=100, tools=[tool], messages=[{"role": "user", "content": "weather?"}]) as stream:
            final = stream.get_final_message()
        use = [block for block in final.content if block.type == "tool_use"][0]
        equal((use.name, use.input), ("weather", {"city": "Paris"}), f"{model} streamed tool use")
        equal(final.stop_reason, "tool_use", f"{model} stop reason")
    thinking = {"type": "enabled", "budget_tokens": 1024}
    answer = an.messages.create(model="claude", max_tokens=2000, thinking=thinking, messages=HI)
    equal((answer.content[0].type, answer.content[0].signature), ("thinking", "c2lnbmF0dXJl+/=="), "thinking signature")
    with an.messages.stream(model="claude", max_tokens=2000, thinking=thinking, messages=HI) as stream:
        final = stream.get_final_message()
    equal(final.content[0].signature, "c2lnbmF0dXJl+/==", "streamed thinking signature")


def anthropic_errors():
    try:
        anthropic.Anthropic(base_url=URL, api_key="not-a-consumer-key", max_retries=0).messages.create(model="claude", max_tokens=10, messages=HI)
        raise Difference("an unknown key was let through")
    except anthropic.AuthenticationError as error:
        equal(error.status_code, 401, "unknown key status")
    try:
        an.messages.create(model="nope", max_tokens=10, messages=HI)
        raise Difference("an unknown model was answered")
    except anthropic.NotFoundError as error:
        equal(error.status_code, 404, "unknown model status")
        equal(error.body["error"]["type"], "not_found_error", "unknown model error type")


SCENARIOS = {name: function for name, function in globals().items() if name.startswith(("openai_", "anthropic_"))}
for line in sys.stdin:
    name = line.strip()
    try:
        SCENARIOS[name]()
        print(f"{name}: ok", flush=True)
    except KeyError:
        print(f"{name}: FAILED: unknown scenario; known: {', '.join(SCENARIOS)}", flush=True)
    except Exception as error:  # noqa: BLE001 - every failure is reported, the next scenario runs
        print(f"{name}: FAILED: {type(error).__name__}: {error}", flush=True)
