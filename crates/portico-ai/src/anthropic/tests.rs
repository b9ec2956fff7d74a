//! The Anthropic format against Anthropic's documented examples.

use super::*;
use crate::chat::*;
use crate::sse::{SseEvent, SseParser};
use serde_json::{json, Value};

/// The documented stream of an answer with text, then a tool call.
const STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1,"cache_creation_input_tokens":10,"cache_read_input_tokens":100}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me check."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Pa"}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"ris\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;

pub(crate) fn sse(text: &str) -> Vec<SseEvent> {
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    parser.push(text.as_bytes(), &mut events).expect("sse");
    parser.finish(&mut events);
    events
}

#[test]
fn a_documented_stream_is_read_with_signatures_and_cumulative_usage() {
    let mut reader = StreamReader::default();
    let mut out = Vec::new();
    for event in sse(STREAM) {
        reader.read(&event, &mut out);
    }
    let start_usage = Usage {
        prompt_tokens: 135,
        cached_tokens: 100,
        cache_write_tokens: 10,
        completion_tokens: 1,
        reasoning_tokens: 0,
    };
    assert_eq!(
        out,
        vec![
            StreamEvent::Start { id: "msg_1".into(), model: "claude-sonnet-4-5".into() },
            StreamEvent::Usage(start_usage),
            StreamEvent::Thinking("Let me check.".into()),
            StreamEvent::Signature("EqQBCgIYAhIM1gbcDa9GJwZA2b3h".into()),
            StreamEvent::Text("Hello".into()),
            StreamEvent::ToolCall { index: 0, id: "toolu_1".into(), name: "get_weather".into() },
            StreamEvent::ToolArguments { index: 0, fragment: "{\"city\": \"Pa".into() },
            StreamEvent::ToolArguments { index: 0, fragment: "ris\"}".into() },
            StreamEvent::Finish { reason: FinishReason::ToolCalls, stop_sequence: None },
            // `output_tokens` is cumulative: it replaces the 1 of message_start.
            StreamEvent::Usage(Usage { completion_tokens: 89, ..start_usage }),
            StreamEvent::End,
        ]
    );
}

#[test]
fn what_is_read_is_written_back_as_the_same_stream() {
    let mut reader = StreamReader::default();
    let mut events = Vec::new();
    for event in sse(STREAM) {
        reader.read(&event, &mut events);
    }
    let request = ChatRequest { model: "alias".into(), ..ChatRequest::default() };
    let mut writer = StreamWriter::new(&request);
    let mut out = Vec::new();
    for event in &events {
        writer.write(event, &mut out);
    }
    let written = sse(std::str::from_utf8(&out).expect("utf-8"));
    let original: Vec<SseEvent> = sse(STREAM).into_iter().filter(|e| e.event.as_deref() != Some("ping")).collect();
    assert_eq!(written.len(), original.len() - 1, "the empty input_json_delta is not repeated");
    let names = |events: &[SseEvent]| events.iter().map(|e| e.event.clone().unwrap_or_default()).collect::<Vec<_>>();
    let mut expected = names(&original);
    expected.remove(original.iter().position(|e| e.data.contains(r#""partial_json":"""#)).expect("the empty delta"));
    assert_eq!(names(&written), expected);
    let data = |e: &SseEvent| serde_json::from_str::<Value>(&e.data).expect("json");
    assert_eq!(data(&written[3])["delta"]["signature"], "EqQBCgIYAhIM1gbcDa9GJwZA2b3h");
    let delta = data(&written[written.len() - 2]);
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 25, "output_tokens": 89, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 100})
    );
}

#[test]
fn a_documented_request_keeps_signatures_and_cache_markers() {
    let body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h+/="},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}]}
        ],
        "metadata": {"user_id": "u-1"}
    });
    let request = parse_request(&body).expect("parses");
    assert_eq!(request.tool_choice, Some(ToolChoice::Required));
    assert_eq!(request.parallel_tool_calls, Some(false));
    assert_eq!(request.user.as_deref(), Some("u-1"));
    let written = write_request(&request, "claude-sonnet-4-5").expect("writes");
    for field in ["system", "thinking", "tool_choice", "tools", "messages", "metadata", "max_tokens"] {
        assert_eq!(written[field], body[field], "{field}");
    }
}

#[test]
fn bad_requests_are_refused_naming_the_field() {
    let cases = [
        (json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}), "max_tokens"),
        (json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "hi"}]}), "messages[0].role"),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
            "messages[0].content[0].text",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]}),
            "messages[0].content[0].source.type",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "tool_choice": {"type": "maybe"}}),
            "tool_choice.type",
        ),
    ];
    for (body, field) in cases {
        let error = parse_request(&body).expect_err(&body.to_string());
        assert_eq!(error.param.as_deref(), Some(field), "{body}: {error}");
    }
}

#[test]
fn usage_counts_cached_tokens_as_input_both_ways() {
    let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                      "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn", "stop_sequence": null,
                      "usage": {"input_tokens": 25, "output_tokens": 15, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 70}});
    let response = parse_response(body.to_string().as_bytes()).expect("parses");
    assert_eq!(
        (response.usage.prompt_tokens, response.usage.cached_tokens, response.usage.total_tokens()),
        (100, 70, 115)
    );
    let written: Value = serde_json::from_slice(&write_response(&response)).expect("json");
    assert_eq!(written, body);
}
