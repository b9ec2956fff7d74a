//! The OpenAI format against OpenAI's documented examples.

use super::*;
use crate::chat::*;
use crate::sse::SseEvent;
use crate::ErrorKind;
use serde_json::{json, Value};

fn read_stream(lines: &[Value]) -> Vec<StreamEvent> {
    let mut reader = StreamReader::default();
    let mut out = Vec::new();
    for line in lines {
        let data = match line {
            Value::String(done) => done.clone(),
            chunk => chunk.to_string(),
        };
        reader.read(&SseEvent { event: None, data }, &mut out);
    }
    out
}

#[test]
fn a_documented_request_is_read_whole() {
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "18C and sunny"}
        ],
        "stream": true, "stream_options": {"include_usage": true},
        "max_tokens": 256, "temperature": 1, "stop": "\n", "seed": 7,
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
        "service_tier": "auto"
    });
    let request = parse_request(&body).expect("parses");
    assert_eq!(request.model, "gpt-4o-mini");
    assert_eq!(request.system, vec![Part::Text { text: "Be brief.".into(), cache_control: None }]);
    assert_eq!(request.messages.len(), 3);
    assert_eq!(
        request.messages[0].parts[1],
        Part::Image {
            source: ImageSource::Base64 { media_type: "image/png".into(), data: "iVBORw0KGgo=".into() },
            cache_control: None
        }
    );
    assert_eq!(
        request.messages[1].parts,
        vec![Part::ToolCall {
            id: "call_abc".into(),
            name: "get_weather".into(),
            arguments: "{\"city\":\"Paris\"}".into(),
            cache_control: None
        }]
    );
    assert_eq!(request.messages[2].role, Role::User);
    assert!(matches!(&request.messages[2].parts[0], Part::ToolResult { call_id, .. } if call_id == "call_abc"));
    assert!(request.stream && request.include_usage);
    assert_eq!(request.max_tokens, Some(256));
    assert_eq!(request.stop, vec!["\n".to_owned()]);
    assert_eq!(request.tool_choice, Some(ToolChoice::Tool("get_weather".into())));
    assert_eq!(request.parallel_tool_calls, Some(false));
    assert_eq!(request.tools[0].strict, Some(true));
    assert!(matches!(&request.response_format, Some(ResponseFormat::JsonSchema { name, .. }) if name == "answer"));
    // Fields this module does not know travel on to OpenAI-format providers.
    assert_eq!(request.extra.get("service_tier"), Some(&json!("auto")));
}

#[test]
fn bad_requests_are_refused_naming_the_field() {
    let cases = [
        (json!({"messages": [{"role": "user", "content": "hi"}]}), "model"),
        (json!({"model": "m", "messages": "hi"}), "messages"),
        (json!({"model": "m", "messages": []}), "messages"),
        (json!({"model": "m", "messages": [{"role": "robot", "content": "hi"}]}), "messages[0].role"),
        (json!({"model": "m", "messages": [{"role": "user", "content": 42}]}), "messages[0].content"),
        (json!({"model": "m", "messages": [{"role": "user"}]}), "messages[0].content"),
        (json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}), "messages[0].tool_call_id"),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}), "temperature"),
        (json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}), "max_tokens"),
        (json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}), "stream"),
    ];
    for (body, field) in cases {
        let error = parse_request(&body).expect_err(&body.to_string());
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert_eq!(error.param.as_deref(), Some(field), "{body}: {error}");
    }
}

#[test]
fn requests_are_written_in_each_dialects_words() {
    let body = json!({
        "model": "alias", "max_tokens": 100, "seed": 3, "tool_choice": "required",
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    });
    let request = parse_request(&body).expect("parses");
    let openai =
        write_request(&request, "gpt-4o", Flavour { max_completion_tokens: true, mistral: false }).expect("writes");
    assert_eq!(openai["model"], "gpt-4o");
    assert_eq!(openai["max_completion_tokens"], 100);
    assert_eq!((openai["seed"].clone(), openai["tool_choice"].clone()), (json!(3), json!("required")));
    assert_eq!(openai["messages"], json!([{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]));
    let mistral = write_request(&request, "mistral-large", Flavour { max_completion_tokens: false, mistral: true })
        .expect("writes");
    assert_eq!(mistral["max_tokens"], 100);
    assert_eq!((mistral["random_seed"].clone(), mistral["tool_choice"].clone()), (json!(3), json!("any")));
    assert!(mistral.get("seed").is_none());
}

#[test]
fn a_documented_response_is_read_with_its_usage() {
    let body = json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion", "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
        ]}, "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
                  "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 0}}
    });
    let response = parse_response(body.to_string().as_bytes()).expect("parses");
    assert_eq!(response.finish, FinishReason::ToolCalls);
    assert_eq!(
        response.usage,
        Usage {
            prompt_tokens: 1117,
            cached_tokens: 1024,
            cache_write_tokens: 0,
            completion_tokens: 46,
            reasoning_tokens: 12
        }
    );
    let written: Value = serde_json::from_slice(&write_response(&response)).expect("json");
    assert_eq!(written["choices"][0]["message"]["tool_calls"], body["choices"][0]["message"]["tool_calls"]);
    assert_eq!(written["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(written["usage"]["total_tokens"], 1163);
    assert_eq!(written["usage"]["prompt_tokens_details"]["cached_tokens"], 1024);
}

#[test]
fn usage_is_read_in_every_shape_providers_send_it() {
    let chunk = |choices: Value| {
        let mut chunk = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                               "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}});
        if !choices.is_null() {
            chunk["choices"] = choices;
        }
        chunk
    };
    let shapes = [
        chunk(json!([])),   // OpenAI
        chunk(Value::Null), // choices missing
        {
            let mut c = chunk(json!([]));
            c["choices"] = Value::Null;
            c
        }, // choices null
        chunk(json!([{"index": 0, "delta": {}, "finish_reason": "stop"}])), // usage on the last choice
    ];
    for shape in shapes {
        let events = read_stream(&[shape.clone(), json!("[DONE]")]);
        let usage = events.iter().find_map(|e| if let StreamEvent::Usage(u) = e { Some(*u) } else { None });
        assert_eq!(usage.map(|u| (u.prompt_tokens, u.completion_tokens)), Some((9, 3)), "{shape}");
        assert_eq!(events.last(), Some(&StreamEvent::End));
    }
}

#[test]
fn parallel_tool_call_fragments_are_told_apart_by_index() {
    let delta = |calls: Value| json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": null}]});
    let events = read_stream(&[
        json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": null}, "finish_reason": null}]}),
        delta(json!([{"index": 0, "id": "call_a", "type": "function", "function": {"name": "a", "arguments": ""}}])),
        delta(
            json!([{"index": 1, "id": "call_b", "type": "function", "function": {"name": "b", "arguments": "{\"y\""}}]),
        ),
        delta(json!([{"index": 0, "function": {"arguments": "{\"x\":1}"}}])),
        delta(json!([{"index": 1, "function": {"arguments": ":2}"}}])),
        json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        json!("[DONE]"),
    ]);
    assert_eq!(
        events,
        vec![
            StreamEvent::Start { id: "c".into(), model: "m".into() },
            StreamEvent::ToolCall { index: 0, id: "call_a".into(), name: "a".into() },
            StreamEvent::ToolCall { index: 1, id: "call_b".into(), name: "b".into() },
            StreamEvent::ToolArguments { index: 1, fragment: "{\"y\"".into() },
            StreamEvent::ToolArguments { index: 0, fragment: "{\"x\":1}".into() },
            StreamEvent::ToolArguments { index: 1, fragment: ":2}".into() },
            StreamEvent::Finish { reason: FinishReason::ToolCalls, stop_sequence: None },
            StreamEvent::End,
        ]
    );
}

#[test]
fn a_mid_stream_error_is_an_error_event() {
    let events = read_stream(&[json!({"error": {"message": "The server had an error", "type": "server_error"}})]);
    assert!(matches!(&events[..], [StreamEvent::Error(e)] if e.message == "The server had an error"));
}

#[test]
fn streams_are_written_as_openai_clients_expect() {
    let request = ChatRequest { model: "alias".into(), include_usage: true, ..ChatRequest::default() };
    let mut writer = StreamWriter::new(&request);
    let mut out = Vec::new();
    for event in [
        StreamEvent::Start { id: "msg_1".into(), model: "claude-x".into() },
        StreamEvent::Text("Hel".into()),
        StreamEvent::Text("lo".into()),
        StreamEvent::Finish { reason: FinishReason::Stop, stop_sequence: None },
        StreamEvent::Usage(Usage { prompt_tokens: 9, completion_tokens: 2, ..Usage::default() }),
        StreamEvent::End,
    ] {
        writer.write(&event, &mut out);
    }
    let text = String::from_utf8(out).expect("utf-8");
    let chunks: Vec<&str> = text.split("\n\n").filter(|c| !c.is_empty()).collect();
    assert!(chunks.iter().all(|c| c.starts_with("data: ")), "only data lines: {text}");
    assert_eq!(chunks.last(), Some(&"data: [DONE]"));
    let parsed: Vec<Value> =
        chunks[..chunks.len() - 1].iter().map(|c| serde_json::from_str(&c["data: ".len()..]).expect("json")).collect();
    assert_eq!(parsed[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    assert_eq!(parsed[1]["choices"][0]["delta"]["content"], "Hel");
    assert_eq!(parsed[3]["choices"][0]["finish_reason"], "stop");
    assert!(parsed[..4]
        .iter()
        .all(|c| c["usage"].is_null() && c["id"] == "msg_1" && c["object"] == "chat.completion.chunk"));
    assert_eq!(parsed[4]["choices"], json!([]));
    assert_eq!(parsed[4]["usage"]["total_tokens"], 11);
}

#[test]
fn mistral_gets_tool_call_ids_it_accepts_matching_their_results() {
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "toolu_01A09q90qw90lq917835lq9", "type": "function", "function": {"name": "w", "arguments": "{}"}},
            {"id": "abcDEF123", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "18C"},
        {"role": "tool", "tool_call_id": "abcDEF123", "content": "20C"}
    ]});
    let request = parse_request(&body).expect("parses");
    let written = write_request(&request, "mistral-large", Flavour { max_completion_tokens: false, mistral: true })
        .expect("writes");
    let calls = written["messages"][1]["tool_calls"].as_array().expect("calls");
    let first = calls[0]["id"].as_str().expect("id");
    assert!(first.len() == 9 && first.bytes().all(|b| b.is_ascii_alphanumeric()), "{first}");
    assert_eq!(written["messages"][2]["tool_call_id"], first, "the result still names its call");
    assert_eq!(calls[1]["id"], "abcDEF123", "an id Mistral accepts is kept");
    assert_eq!(mistral_id("toolu_01A09q90qw90lq917835lq9"), first, "the same id always maps the same way");
}
