//! Gemini against its documented examples.

use super::*;
use crate::chat::*;
use crate::sse::SseEvent;
use crate::Format;
use serde_json::{json, Value};

#[test]
fn an_openai_conversation_becomes_gemini_contents() {
    let body = json!({
        "model": "alias", "max_tokens": 200, "temperature": 0.2, "stop": ["END"], "seed": 4,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object", "additionalProperties": false}}},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather here?"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1_ts_c2lnLTE", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1_ts_c2lnLTE", "content": "18C"}
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather",
                   "parameters": {"type": "object", "$schema": "x", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}}
    });
    let request = Format::OpenAi.parse_request(&body).expect("parses");
    let written = write_request(&request, "gemini-2.5-flash").expect("writes");
    assert_eq!(
        written,
        json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Weather here?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}]},
                // The signature Gemini gave this call comes back with it.
                {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "sig-1"}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"content": "18C"}}}]}
            ],
            "tools": [{"functionDeclarations": [{"name": "weather", "description": "Weather",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}},
            "generationConfig": {"temperature": 0.2, "maxOutputTokens": 200, "seed": 4, "stopSequences": ["END"],
                                 "responseMimeType": "application/json", "responseSchema": {"type": "object"}}
        })
    );
}

#[test]
fn a_documented_answer_is_read_with_its_usage_and_signed_calls() {
    let body = json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Thinking about it", "thought": true},
            {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "CiQB0e2Kb+/x=="}
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 20, "totalTokenCount": 170,
                          "cachedContentTokenCount": 100, "thoughtsTokenCount": 30},
        "modelVersion": "gemini-2.5-flash", "responseId": "abc123"
    });
    let response = parse_response(body.to_string().as_bytes()).expect("parses");
    assert_eq!((response.id.as_str(), response.model.as_str()), ("abc123", "gemini-2.5-flash"));
    assert_eq!(response.finish, FinishReason::ToolCalls, "Gemini says STOP even when it calls a function");
    assert_eq!(
        response.usage,
        Usage {
            prompt_tokens: 120,
            cached_tokens: 100,
            cache_write_tokens: 0,
            completion_tokens: 50,
            reasoning_tokens: 30
        }
    );
    assert_eq!(response.parts[0], Part::Thinking { text: "Thinking about it".into(), signature: None });
    let Part::ToolCall { id, arguments, .. } = &response.parts[1] else { panic!("a tool call: {:?}", response.parts) };
    assert_eq!(arguments, "{\"city\":\"Paris\"}");
    assert_eq!(signature::extract(id).1.as_deref(), Some("CiQB0e2Kb+/x=="));
    // An OpenAI client gets the call, and its id carries the signature back next turn.
    let openai: Value = serde_json::from_slice(&Format::OpenAi.write_response(&response)).expect("json");
    assert_eq!(openai["choices"][0]["message"]["tool_calls"][0]["id"], id.as_str());
    assert_eq!(openai["usage"]["completion_tokens_details"]["reasoning_tokens"], 30);
}

#[test]
fn a_stream_ends_with_its_body_and_calls_arrive_whole() {
    let chunks = [
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}], "modelVersion": "gemini-2.5-flash", "responseId": "r1"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "index": 0}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]}, "finishReason": "STOP", "index": 0}],
               "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13}}),
    ];
    let mut reader = StreamReader::default();
    let mut out = Vec::new();
    for chunk in &chunks {
        reader.read(&SseEvent { event: None, data: chunk.to_string() }, &mut out);
    }
    assert!(!out.contains(&StreamEvent::End), "nothing in the events says the stream is over");
    reader.finish(&mut out);
    let id = match &out[3] {
        StreamEvent::ToolCall { index: 0, id, name } if name == "f" => id.clone(),
        other => panic!("a tool call, not {other:?}"),
    };
    assert!(id.starts_with("call_"));
    assert_eq!(
        out,
        vec![
            StreamEvent::Start { id: "r1".into(), model: "gemini-2.5-flash".into() },
            StreamEvent::Text("Hel".into()),
            StreamEvent::Text("lo".into()),
            StreamEvent::ToolCall { index: 0, id, name: "f".into() },
            StreamEvent::ToolArguments { index: 0, fragment: "{\"a\":1}".into() },
            StreamEvent::Finish { reason: FinishReason::ToolCalls, stop_sequence: None },
            StreamEvent::Usage(Usage { prompt_tokens: 9, completion_tokens: 4, ..Usage::default() }),
            StreamEvent::End,
        ]
    );
    // A body that stops before a finish reason is not a complete answer.
    let mut cut = StreamReader::default();
    let mut out = Vec::new();
    cut.read(&SseEvent { event: None, data: chunks[0].to_string() }, &mut out);
    cut.finish(&mut out);
    assert!(!out.contains(&StreamEvent::End));
}

#[test]
fn anthropic_thinking_and_effort_become_a_thinking_budget() {
    let body = json!({"model": "m", "max_tokens": 3000, "thinking": {"type": "enabled", "budget_tokens": 2048},
                      "messages": [{"role": "user", "content": "hi"}]});
    let request = Format::Anthropic.parse_request(&body).expect("parses");
    let written = write_request(&request, "gemini-2.5-pro").expect("writes");
    assert_eq!(written["generationConfig"]["thinkingConfig"], json!({"thinkingBudget": 2048, "includeThoughts": true}));
    assert_eq!(written["generationConfig"]["maxOutputTokens"], 3000);
    let body = json!({"model": "m", "reasoning_effort": "low", "messages": [{"role": "user", "content": "hi"}]});
    let written = write_request(&Format::OpenAi.parse_request(&body).expect("parses"), "g").expect("writes");
    assert_eq!(written["generationConfig"]["thinkingConfig"]["thinkingBudget"], 1024);
}
