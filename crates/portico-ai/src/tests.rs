//! Translation between formats: requests, responses and streams end to end.

use crate::*;
use serde_json::{json, Value};

fn translate_stream(from: Dialect, to: Format, request: &ChatRequest, upstream: &str) -> Vec<SseEvent> {
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    // Fed a few bytes at a time, as a network would.
    for piece in upstream.as_bytes().chunks(7) {
        parser.push(piece, &mut events).expect("sse");
    }
    parser.finish(&mut events);
    let (mut reader, mut writer) = (from.stream_reader(), to.stream_writer(request));
    let (mut steps, mut out) = (Vec::new(), Vec::new());
    for event in &events {
        steps.clear();
        reader.read(event, &mut steps);
        for step in &steps {
            writer.write(step, &mut out);
        }
    }
    steps.clear();
    reader.finish(&mut steps);
    for step in &steps {
        writer.write(step, &mut out);
    }
    let mut parser = SseParser::default();
    let mut written = Vec::new();
    parser.push(&out, &mut written).expect("sse");
    written
}

fn data(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).expect("json")
}

#[test]
fn an_openai_conversation_becomes_an_anthropic_request() {
    let body = json!({
        "model": "alias", "stream": true,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "24C"}
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "tool_choice": "required"
    });
    let request = Format::OpenAi.parse_request(&body).expect("parses");
    let written: Value =
        serde_json::from_slice(&Dialect::Anthropic.write_request(&request, "claude-x").expect("writes")).expect("json");
    assert_eq!(
        written,
        json!({
            "model": "claude-x", "max_tokens": 4096, "stream": true,
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}}
                ]},
                // Two tool messages become one user message with both results.
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"}
                ]}
            ],
            "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"}
        })
    );
}

#[test]
fn what_anthropic_cannot_do_is_refused_not_dropped() {
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    for (extra, field) in [
        (json!({"n": 2}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"presence_penalty": 0.5}), "presence_penalty"),
        (json!({"response_format": {"type": "json_object"}, "tools": tools}), "response_format"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "array"}}}}),
            "response_format.json_schema.schema",
        ),
    ] {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        let request = Format::OpenAi.parse_request(&body).expect("parses");
        let error = Dialect::Anthropic.write_request(&request, "claude").expect_err(field);
        assert_eq!(error.param.as_deref(), Some(field));
    }
    // A zero penalty changes nothing and is accepted.
    let body = json!({"model": "m", "presence_penalty": 0, "messages": [{"role": "user", "content": "hi"}]});
    let request = Format::OpenAi.parse_request(&body).expect("parses");
    assert!(Dialect::Anthropic.write_request(&request, "claude").is_ok());
}

#[test]
fn an_anthropic_conversation_becomes_an_openai_request() {
    let body = json!({
        "model": "alias", "max_tokens": 300, "stop_sequences": ["END"],
        "system": [{"type": "text", "text": "Long shared context", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 5000},
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Call it.", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "And tomorrow?"}
            ]}
        ]
    });
    let request = Format::Anthropic.parse_request(&body).expect("parses");
    let written: Value =
        serde_json::from_slice(&Dialect::OpenAi.write_request(&request, "gpt-4o").expect("writes")).expect("json");
    assert_eq!(
        written,
        json!({
            "model": "gpt-4o", "max_completion_tokens": 300, "stop": ["END"], "reasoning_effort": "medium",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "Long shared context", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "user", "content": "And tomorrow?"}
            ]
        })
    );
}

#[test]
fn an_anthropic_stream_reaches_an_openai_client_with_tool_calls_and_usage() {
    let upstream = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-x","usage":{"input_tokens":20,"output_tokens":1,"cache_read_input_tokens":80}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me look."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}}

event: message_stop
data: {"type":"message_stop"}

"#;
    let request = ChatRequest { model: "alias".into(), stream: true, include_usage: true, ..ChatRequest::default() };
    let written = translate_stream(Dialect::Anthropic, Format::OpenAi, &request, upstream);
    assert!(written.iter().all(|e| e.event.is_none()));
    assert_eq!(written.last().map(|e| e.data.as_str()), Some("[DONE]"));
    let chunks: Vec<Value> = written[..written.len() - 1].iter().map(data).collect();
    let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c.pointer("/choices/0/delta")).collect();
    assert_eq!(deltas[0]["role"], "assistant");
    assert_eq!(deltas[1]["content"], "Let me look.");
    assert_eq!(
        deltas[2]["tool_calls"][0],
        json!({"index": 0, "id": "toolu_9", "type": "function", "function": {"name": "weather", "arguments": ""}})
    );
    let arguments: String =
        deltas[3..].iter().filter_map(|d| d.pointer("/tool_calls/0/function/arguments")?.as_str()).collect();
    assert_eq!(arguments, "{\"city\":\"Paris\"}");
    let finish = chunks.iter().find_map(|c| c.pointer("/choices/0/finish_reason")?.as_str().map(str::to_owned));
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    let usage = &chunks.last().expect("a usage chunk")["usage"];
    assert_eq!(
        (usage["prompt_tokens"].clone(), usage["completion_tokens"].clone(), usage["total_tokens"].clone()),
        (json!(100), json!(30), json!(130))
    );
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 80);
}

#[test]
fn an_openai_stream_reaches_an_anthropic_client_as_content_blocks() {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let upstream = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hi"}), Value::Null),
        chunk(json!({"content": " there"}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":"}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        format!("data: {}\n\n", json!({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}})),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    let request = ChatRequest { model: "alias".into(), stream: true, ..ChatRequest::default() };
    let written = translate_stream(Dialect::OpenAi, Format::Anthropic, &request, &upstream);
    let names: Vec<&str> = written.iter().map(|e| e.event.as_deref().unwrap_or("")).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(written.iter().all(|e| data(e)["type"] == e.event.as_deref().unwrap_or("")));
    assert_eq!(
        data(&written[5])["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {}})
    );
    assert_eq!(data(&written[7])["delta"], json!({"type": "input_json_delta", "partial_json": "1}"}));
    assert_eq!(data(&written[7])["index"], 1);
    let delta = data(&written[9]);
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["input_tokens"], 12);
    assert_eq!(delta["usage"]["output_tokens"], 5);
}

#[test]
fn a_mid_stream_error_reaches_the_client_in_its_format() {
    let upstream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\"}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let request = ChatRequest { model: "alias".into(), stream: true, ..ChatRequest::default() };
    let written = translate_stream(Dialect::Anthropic, Format::OpenAi, &request, upstream);
    let error = data(written.last().expect("an event"));
    assert_eq!(error["error"]["message"], "Overloaded");
    assert_eq!(error["error"]["type"], "server_error");
}

#[test]
fn responses_cross_formats_with_tool_calls_and_thinking() {
    let anthropic = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "thinking", "thinking": "Hmm.", "signature": "sig"}, {"type": "text", "text": "Calling."},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}});
    let response = Dialect::Anthropic.parse_response(anthropic.to_string().as_bytes()).expect("parses");
    let openai: Value = serde_json::from_slice(&Format::OpenAi.write_response(&response)).expect("json");
    let message = &openai["choices"][0]["message"];
    assert_eq!(message["content"], "Calling.");
    assert_eq!(message["reasoning_content"], "Hmm.");
    assert_eq!(message["tool_calls"][0]["function"], json!({"name": "f", "arguments": "{\"a\":1}"}));
    assert_eq!(openai["choices"][0]["finish_reason"], "tool_calls");
    // And back: the same answer as an Anthropic client would have had it.
    let back = Dialect::OpenAi.parse_response(&Format::OpenAi.write_response(&response)).expect("parses");
    let again: Value = serde_json::from_slice(&Format::Anthropic.write_response(&back)).expect("json");
    let content = |v: &Value| v["content"].as_array().expect("array")[1..].to_vec();
    assert_eq!(content(&again), content(&anthropic));
    assert_eq!(again["stop_reason"], "tool_use");
}

#[test]
fn json_answers_from_anthropic_come_back_as_text() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let body = json!({"model": "alias", "stream": true, "messages": [{"role": "user", "content": "Where?"}],
                      "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": true}}});
    let request = Format::OpenAi.parse_request(&body).expect("parses");
    let written: Value =
        serde_json::from_slice(&Dialect::Anthropic.write_request(&request, "claude").expect("writes")).expect("json");
    assert_eq!(written["tools"][0]["input_schema"], schema);
    assert_eq!(written["tool_choice"], json!({"type": "tool", "name": "json_response"}));

    // Whole: the tool's input is the text of the answer.
    let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "json_response", "input": {"city": "Paris"}}],
        "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 5}});
    let mut response = Dialect::Anthropic.parse_response(answer.to_string().as_bytes()).expect("parses");
    response.unwrap_json_tool();
    let openai: Value = serde_json::from_slice(&Format::OpenAi.write_response(&response)).expect("json");
    assert_eq!(openai["choices"][0]["message"]["content"], "{\"city\":\"Paris\"}");
    assert_eq!(openai["choices"][0]["finish_reason"], "stop");
    assert!(openai["choices"][0]["message"].get("tool_calls").is_none());

    // Streamed: the tool's input fragments are the content deltas.
    let upstream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"json_response\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let written = translate_stream(Dialect::Anthropic, Format::OpenAi, &request, upstream);
    let chunks: Vec<Value> = written[..written.len() - 1].iter().map(data).collect();
    let text: String = chunks.iter().filter_map(|c| c.pointer("/choices/0/delta/content")?.as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&text).expect("the text is the JSON"), json!({"city": "Paris"}));
    assert!(chunks.iter().all(|c| c.pointer("/choices/0/delta/tool_calls").is_none()));
    let finish = chunks.iter().find_map(|c| c.pointer("/choices/0/finish_reason")?.as_str());
    assert_eq!(finish, Some("stop"));
}

/// Every provider's usage, in every shape it arrives in, means the same once read: all
/// input tokens in `prompt_tokens` (cached ones included), output with reasoning included.
#[test]
fn usage_is_read_to_one_meaning_from_every_provider_and_shape() {
    let whole = |dialect: Dialect, body: Value| dialect.read_usage(&serde_json::to_vec(&body).expect("json"));
    let openai = json!({"usage": {"prompt_tokens": 100, "completion_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 8}}});
    let expected = Usage {
        prompt_tokens: 100,
        cached_tokens: 60,
        cache_write_tokens: 0,
        completion_tokens: 20,
        reasoning_tokens: 8,
    };
    assert_eq!(whole(Dialect::OpenAi, openai), Some(expected));
    // DeepSeek names its cache hits its own way.
    let deepseek = json!({"usage": {"prompt_tokens": 100, "completion_tokens": 20, "prompt_cache_hit_tokens": 60}});
    assert_eq!(whole(Dialect::OpenAiCompatible, deepseek).map(|u| u.cached_tokens), Some(60));
    // Anthropic's input_tokens leaves the cache out; the sum is every input token.
    let anthropic = json!({"usage": {"input_tokens": 10, "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 30, "output_tokens": 20}});
    let read = whole(Dialect::Anthropic, anthropic).expect("usage");
    assert_eq!((read.prompt_tokens, read.cached_tokens, read.cache_write_tokens), (100, 60, 30));
    assert_eq!(read.uncached_prompt_tokens(), 10);
    // Gemini's candidates leave out the thoughts.
    let gemini = json!({"usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 60,
        "candidatesTokenCount": 12, "thoughtsTokenCount": 8}});
    assert_eq!(whole(Dialect::Gemini, gemini), Some(expected));
    // As a server may print it: indented, with the usage after the choices.
    let pretty = json!({"choices": [{"message": {"content": "the \"usage\": {}"}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 8}}});
    let pretty = serde_json::to_vec_pretty(&pretty).expect("json");
    assert_eq!(Dialect::OpenAi.read_usage(&pretty), Some(expected));
    // Counts may be null; a usage object off the provider's documented shape is not read
    // (the gateway then estimates, and says so).
    let nulls = json!({"usage": {"prompt_tokens": 9, "completion_tokens": 3, "prompt_tokens_details": null,
        "completion_tokens_details": {"reasoning_tokens": null}}});
    assert_eq!(whole(Dialect::OpenAi, nulls).map(|u| (u.prompt_tokens, u.completion_tokens)), Some((9, 3)));
    let odd = json!({"usage": {"prompt_tokens": 9, "completion_tokens": "3"}});
    assert_eq!(whole(Dialect::OpenAi, odd), None);
    assert_eq!(whole(Dialect::OpenAi, json!({"choices": []})), None, "no usage is none, not zero");
    assert_eq!(whole(Dialect::OpenAi, json!({"usage": null})), None);

    // In streams: a final chunk with empty choices, usage on the last chunk with a choice,
    // and Groq's `x_groq`.
    let streamed = |chunk: Value| {
        let mut reader = Dialect::OpenAi.stream_reader();
        let mut out = Vec::new();
        reader.read(&SseEvent { event: None, data: chunk.to_string() }, &mut out);
        out.into_iter().find_map(|e| match e {
            StreamEvent::Usage(usage) => Some(usage.total_tokens()),
            _ => None,
        })
    };
    let usage = json!({"prompt_tokens": 7, "completion_tokens": 3});
    assert_eq!(streamed(json!({"id": "c", "choices": [], "usage": usage})), Some(10));
    let last = json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage});
    assert_eq!(streamed(last), Some(10));
    let groq = json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "x_groq": {"id": "req", "usage": usage}});
    assert_eq!(streamed(groq), Some(10));
    assert_eq!(
        streamed(json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": null})),
        None
    );
}

#[test]
fn an_estimate_counts_about_four_bytes_a_token() {
    let guess = Usage::estimate(401, 8);
    assert_eq!((guess.prompt_tokens, guess.completion_tokens), (101, 2));
}
