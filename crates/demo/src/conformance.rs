//! The `conformance` profile: the fixture the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`) expects of a server under test.
//!
//! Names, arguments, texts and content shapes follow the suite's reference
//! "everything" server. Both eras are served: in the legacy era, sampling and
//! elicitation are server→client requests on the call's SSE stream; in the
//! modern era they are MRTR `input_required` results.
//!
//! For 2026-07-28 the fixture adds the `test_input_required_result_*` tools
//! and prompt ([`super::input_required`]), the `server-stateless` diagnostic
//! tools (`test_missing_capability`, `test_streaming_elicitation`,
//! `test_logging_tool`), the list-mutating `test_trigger_tool_change` /
//! `test_trigger_prompt_change` whose changes reach `subscriptions/listen`
//! streams ([`super::listen`]), and `test_custom_headers`, whose arguments
//! are mirrored into `Mcp-Param-*` headers (`x-mcp-header`), and the tasks
//! extension's tools and methods ([`super::tasks`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Asked, Call, Mrtr, Shared, cancelled, input_required, invalid, listen, method_not_found,
    sampling_params, text_result, tool_error,
};
use tether_wire::jsonrpc::ErrorObject;
use tether_wire::protocol::Era;
use tether_wire::tasks;

/// The `instructions` of the legacy `InitializeResult`.
pub(super) const INSTRUCTIONS: &str =
    "Tether demo upstream, conformance profile: the MCP conformance suite's test_* fixture.";

/// The tool whose legacy HTTP answer closes its stream before the result (SEP-1699).
pub(super) const RECONNECTION_TOOL: &str = "test_reconnection";

/// A 1x1 PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A tiny WAV file.
const WAV: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";
/// Pause between the steps of the logging and progress tools.
const STEP: Duration = Duration::from_millis(50);

/// Server capabilities. Modern servers have no `resources/subscribe`, so
/// `subscribe` is only advertised to legacy sessions; list changes reach
/// modern clients on `subscriptions/listen` streams.
pub(super) fn capabilities(era: Era) -> Value {
    match era {
        Era::Legacy => json!({"tools": {}, "resources": {"subscribe": true}, "prompts": {},
            "logging": {}, "completions": {}}),
        Era::Modern => json!({"tools": {"listChanged": true}, "resources": {},
            "prompts": {"listChanged": true}, "logging": {}, "completions": {},
            "extensions": {tasks::EXTENSION: {}}}),
    }
}

/// What the fixture's `subscriptions/listen` streams can carry: tool and
/// prompt list changes (the trigger tools mutate those lists). Resources
/// never change, so only subscriptions to existing resources are honoured.
pub(super) fn listen_support() -> listen::Support {
    listen::Support {
        tools: true,
        prompts: true,
        resources: false,
        known_uri: |uri| read_resource(uri).is_some(),
    }
}

/// Whether calling `tool` answers with an SSE stream: it sends notifications,
/// or (legacy) server→client requests, before its result.
pub(super) fn streams(era: Era, tool: &str) -> bool {
    match tool {
        "test_tool_with_logging"
        | "test_logging_tool"
        | "test_tool_with_progress"
        | "test_streaming_elicitation" => true,
        "test_missing_capability"
        | "test_sampling"
        | "test_elicitation"
        | "test_elicitation_sep1034_defaults"
        | "test_elicitation_sep1330_enums"
        | "confirm_delete"
        | "multi_input"
        | "test_tool_with_task"
        | RECONNECTION_TOOL => era == Era::Legacy,
        _ => false,
    }
}

impl Call {
    /// The conformance profile's methods.
    pub(super) async fn conformance_method(&self, method: &str) -> Result<Value, ErrorObject> {
        let legacy = self.era == Era::Legacy;
        match method {
            "tools/list" => Ok(json!({"tools": tool_list(&self.shared)})),
            "tools/call" => self.conformance_tool().await,
            "prompts/list" => Ok(json!({"prompts": prompt_list(&self.shared)})),
            "prompts/get" => {
                let name = self.params.get("name").and_then(Value::as_str);
                match name.unwrap_or("") {
                    input_required::PROMPT => self.input_required_prompt(),
                    EXTRA_PROMPT if self.shared.extra_prompt.load(Ordering::Relaxed) => Ok(
                        json!({"messages": [{"role": "user", "content": {"type": "text",
                            "text": "This prompt was added by test_trigger_prompt_change."}}]}),
                    ),
                    name => get_prompt(name, self.params.get("arguments").unwrap_or(&Value::Null)),
                }
            }
            "resources/list" => Ok(json!({"resources": resource_list()})),
            "resources/templates/list" => Ok(json!({"resourceTemplates": [{
                "uriTemplate": "test://template/{id}/data", "name": "Resource Template",
                "description": "A templated resource; {id} is any path segment",
                "mimeType": "application/json",
            }]})),
            "resources/read" => {
                let uri = self.params.get("uri").and_then(Value::as_str).unwrap_or("");
                match read_resource(uri) {
                    Some(content) => Ok(json!({"contents": [content]})),
                    None => Err(self.resource_not_found(uri)),
                }
            }
            "resources/subscribe" | "resources/unsubscribe" if legacy => {
                match self.params.get("uri").and_then(Value::as_str) {
                    Some(_) => Ok(json!({})),
                    None => Err(invalid("'uri' must be a string")),
                }
            }
            "completion/complete" => {
                Ok(json!({"completion": {"values": [], "total": 0, "hasMore": false}}))
            }
            "tasks/get" | "tasks/update" | "tasks/cancel" if !legacy => self.task_method(method),
            _ => Err(method_not_found(method)),
        }
    }

    async fn conformance_tool(&self) -> Result<Value, ErrorObject> {
        self.shared.tool_calls.fetch_add(1, Ordering::Relaxed);
        let (name, args) = self.tool_args();
        match name {
            "test_simple_text" => Ok(text_result("This is a simple text response for testing.")),
            "test_image_content" => Ok(json!({"content": [image()]})),
            "test_audio_content" => Ok(json!({"content": [
                {"type": "audio", "data": WAV, "mimeType": "audio/wav"},
            ]})),
            "test_embedded_resource" => Ok(json!({"content": [{"type": "resource", "resource": {
                "uri": "test://embedded-resource", "mimeType": "text/plain",
                "text": "This is an embedded resource content.",
            }}]})),
            "test_multiple_content_types" => Ok(json!({"content": [
                {"type": "text", "text": "Multiple content types test:"},
                image(),
                {"type": "resource", "resource": {"uri": "test://mixed-content-resource",
                    "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}"}},
            ]})),
            "test_tool_with_logging" => self.with_logging().await,
            "test_error_handling" => Ok(tool_error(
                "This tool intentionally returns an error for testing",
            )),
            "test_tool_with_progress" => self.with_progress().await,
            "test_sampling" => {
                let Some(prompt) = args.get("prompt").and_then(Value::as_str) else {
                    return Err(invalid("'prompt' must be a string"));
                };
                let params = sampling_params(prompt);
                Ok(
                    match self
                        .ask("sampling", "sampling", "sampling/createMessage", params)
                        .await?
                    {
                        Ok(answer) => {
                            text_result(&format!("LLM response: {}", super::content_text(&answer)))
                        }
                        Err(result) => result,
                    },
                )
            }
            "test_elicitation" => {
                let Some(message) = args.get("message").and_then(Value::as_str) else {
                    return Err(invalid("'message' must be a string"));
                };
                self.elicit(message, user_schema(), "User response").await
            }
            "test_elicitation_sep1034_defaults" => {
                let message = "Please review and update the form fields with defaults";
                self.elicit(message, defaults_schema(), "Elicitation completed")
                    .await
            }
            "test_elicitation_sep1330_enums" => {
                let message = "Please select options from the enum fields";
                self.elicit(message, enums_schema(), "Elicitation completed")
                    .await
            }
            "json_schema_2020_12_tool" => Ok(text_result(&format!(
                "JSON Schema 2020-12 tool called with: {args}"
            ))),
            "test_logging_tool" => self.with_logging().await,
            "test_missing_capability" => {
                let params = sampling_params("Say hello");
                Ok(
                    match self
                        .ask("sampling", "hello", "sampling/createMessage", params)
                        .await?
                    {
                        Ok(answer) => {
                            text_result(&format!("LLM response: {}", super::content_text(&answer)))
                        }
                        Err(result) => result,
                    },
                )
            }
            "test_streaming_elicitation" => {
                let schema = json!({"type": "object", "properties": {
                    "confirmed": {"type": "boolean", "description": "Whether to go on"}},
                    "required": ["confirmed"]});
                self.elicit(
                    "Continue the streaming operation?",
                    schema,
                    "Elicitation completed",
                )
                .await
            }
            "test_trigger_tool_change" => {
                let added = !self.shared.extra_tool.fetch_xor(true, Ordering::Relaxed);
                self.shared.announce(listen::Change::ToolsListChanged);
                Ok(text_result(&format!(
                    "Tool list changed: {EXTRA_TOOL} {}",
                    if added { "added" } else { "removed" }
                )))
            }
            "test_trigger_prompt_change" => {
                let added = !self.shared.extra_prompt.fetch_xor(true, Ordering::Relaxed);
                self.shared.announce(listen::Change::PromptsListChanged);
                Ok(text_result(&format!(
                    "Prompt list changed: {EXTRA_PROMPT} {}",
                    if added { "added" } else { "removed" }
                )))
            }
            "test_custom_headers" => Ok(text_result(&format!(
                "Custom headers tool called with: {args}"
            ))),
            EXTRA_TOOL if self.shared.extra_tool.load(Ordering::Relaxed) => Ok(text_result(
                "This tool was added by test_trigger_tool_change.",
            )),
            name if input_required::is_tool(name) => self.input_required_tool(name),
            name if super::tasks::is_tool(name) => self.task_tool(name, &args).await,
            RECONNECTION_TOOL => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(text_result(
                    "Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.",
                ))
            }
            _ => Err(invalid(format_args!("unknown tool '{name}'"))),
        }
    }

    /// Three info logs, 50 ms apart, on the call's stream.
    async fn with_logging(&self) -> Result<Value, ErrorObject> {
        let steps = [
            "Tool execution started",
            "Tool processing data",
            "Tool execution completed",
        ];
        for (i, data) in steps.into_iter().enumerate() {
            if i > 0 {
                self.pause().await?;
            }
            if !self.log("info", "test_tool_with_logging", data).await {
                return Err(cancelled());
            }
        }
        Ok(text_result("Tool with logging executed successfully"))
    }

    /// Progress 0, 50 and 100 of 100, 50 ms apart, echoing the request's token as sent.
    async fn with_progress(&self) -> Result<Value, ErrorObject> {
        let token = self.params.pointer("/_meta/progressToken").cloned();
        for (i, progress) in [0u64, 50, 100].into_iter().enumerate() {
            if i > 0 {
                self.pause().await?;
            }
            if let Some(token) = &token {
                let note = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
                    "progressToken": token, "progress": progress, "total": 100,
                    "message": format!("Completed step {} of 3", i + 1),
                }});
                if !self.emit(&note).await {
                    return Err(cancelled());
                }
            }
        }
        Ok(text_result("Progress tool completed 3 steps"))
    }

    /// Waits one [`STEP`]; `Err` when the client went away meanwhile.
    async fn pause(&self) -> Result<(), ErrorObject> {
        tokio::select! {
            () = tokio::time::sleep(STEP) => Ok(()),
            () = self.gone() => Err(cancelled()),
        }
    }

    /// An `elicitation/create` for `message` and `schema`; the result text is
    /// `<label>: action=<action>, content=<content>`.
    async fn elicit(
        &self,
        message: &str,
        schema: Value,
        label: &str,
    ) -> Result<Value, ErrorObject> {
        let params = json!({"message": message, "requestedSchema": schema});
        Ok(
            match self
                .ask("elicitation", "elicitation", "elicitation/create", params)
                .await?
            {
                Ok(answer) => text_result(&format!(
                    "{label}: action={}, content={}",
                    answer.get("action").and_then(Value::as_str).unwrap_or(""),
                    answer.get("content").unwrap_or(&Value::Null),
                )),
                Err(result) => result,
            },
        )
    }

    /// Asks the client for input needing its `capability`: legacy with a
    /// server→client request on this call's stream, modern with MRTR (input
    /// under `key`). `Ok(Ok(answer))` is the client's result; `Ok(Err(result))`
    /// is what the tool returns instead (`input_required`, or a tool error).
    pub(super) async fn ask(
        &self,
        capability: &str,
        key: &str,
        method: &str,
        params: Value,
    ) -> Result<Result<Value, Value>, ErrorObject> {
        if self.era == Era::Modern {
            return Ok(match self.mrtr(capability, key, method, params)? {
                Mrtr::Answer(answer) => Ok(answer.clone()),
                Mrtr::Ask(result) => Err(result),
            });
        }
        let Some(session) = self.client_stream() else {
            return Ok(Err(tool_error(&format!(
                "{method} needs a session and a streaming response"
            ))));
        };
        let declared = match capability {
            "sampling" => &session.sampling,
            _ => &session.elicitation,
        };
        if !declared.load(Ordering::Relaxed) {
            return Ok(Err(tool_error(&format!(
                "the client did not declare the '{capability}' capability"
            ))));
        }
        Ok(match self.ask_client(session, key, method, params).await? {
            Asked::Answered(response) => match response.get("result") {
                Some(result) => Ok(result.clone()),
                None => Err(tool_error(&format!(
                    "the client refused {method}: {}",
                    response.get("error").unwrap_or(&response)
                ))),
            },
            Asked::TimedOut => Err(tool_error(&format!("{method} timed out after 30 s"))),
            Asked::Abandoned => Err(tool_error(&format!("{method} abandoned"))),
        })
    }
}

fn image() -> Value {
    json!({"type": "image", "data": PNG, "mimeType": "image/png"})
}

/// The tool `test_trigger_tool_change` adds and removes.
const EXTRA_TOOL: &str = "test_dynamic_tool";
/// The prompt `test_trigger_prompt_change` adds and removes.
const EXTRA_PROMPT: &str = "test_dynamic_prompt";

/// The tool catalogue; the first tool takes no arguments (suites probe it with `{}`).
pub(super) fn tool_list(shared: &Shared) -> Value {
    let mut tools = static_tools();
    if let Some(list) = tools.as_array_mut() {
        for (name, description) in input_required::TOOLS {
            list.push(json!({"name": name, "description": description,
                "inputSchema": {"type": "object", "properties": {}}}));
        }
        list.extend(super::tasks::tools());
        if shared.extra_tool.load(Ordering::Relaxed) {
            list.push(json!({"name": EXTRA_TOOL, "description": "A tool added by test_trigger_tool_change",
                "inputSchema": {"type": "object", "properties": {}}}));
        }
    }
    tools
}

/// The tools that are always listed, in order.
fn static_tools() -> Value {
    let tool = |name: &str, description: &str| {
        json!({"name": name, "description": description,
            "inputSchema": {"type": "object", "properties": {}}})
    };
    let with_string = |name: &str, description: &str, arg: &str, arg_description: &str| {
        json!({"name": name, "description": description, "inputSchema": {"type": "object",
            "properties": {arg: {"type": "string", "description": arg_description}},
            "required": [arg]}})
    };
    json!([
        tool("test_simple_text", "Tests simple text content response"),
        tool("test_image_content", "Tests image content response"),
        tool("test_audio_content", "Tests audio content response"),
        tool("test_embedded_resource", "Tests embedded resource content response"),
        tool("test_multiple_content_types", "Tests response with multiple content types (text, image, resource)"),
        tool("test_tool_with_logging", "Tests tool that emits log messages during execution"),
        tool("test_error_handling", "Tests error response handling"),
        tool("test_tool_with_progress", "Tests tool that reports progress notifications"),
        with_string("test_sampling", "Tests server-initiated sampling (LLM completion request)",
            "prompt", "The prompt to send to the LLM"),
        with_string("test_elicitation", "Tests server-initiated elicitation (user input request)",
            "message", "The message to show the user"),
        tool("test_elicitation_sep1034_defaults", "Tests elicitation with default values per SEP-1034"),
        tool("test_elicitation_sep1330_enums", "Tests elicitation with enum schema improvements per SEP-1330"),
        {"name": "json_schema_2020_12_tool", "description": "Tool with JSON Schema 2020-12 features",
            "inputSchema": json_schema_2020_12()},
        tool(RECONNECTION_TOOL, "Tests SSE stream disconnection and client reconnection (SEP-1699)"),
        tool("test_missing_capability", "Needs the client's sampling capability (2026-07-28: -32021 without it)"),
        tool("test_streaming_elicitation", "Asks the user to confirm; its response is a stream (2026-07-28: input_required)"),
        tool("test_logging_tool", "Logs three info messages (only when the request asks for logs)"),
        tool("test_trigger_tool_change", "Adds or removes test_dynamic_tool and announces tools/list_changed"),
        tool("test_trigger_prompt_change", "Adds or removes test_dynamic_prompt and announces prompts/list_changed"),
        {"name": "test_custom_headers", "description": "Mirrors arguments into Mcp-Param-* headers (SEP-2243 x-mcp-header)",
            "inputSchema": custom_headers_schema()},
    ])
}

/// `test_custom_headers`: arguments mirrored into `Mcp-Param-*` headers.
fn custom_headers_schema() -> Value {
    json!({"type": "object", "properties": {
        "region": {"type": "string", "description": "Deployment region", "x-mcp-header": "Region"},
        "priority": {"type": "integer", "description": "Request priority", "x-mcp-header": "Priority"},
        "verbose": {"type": "boolean", "description": "Verbose output", "x-mcp-header": "Verbose"},
        "query": {"type": "string", "description": "Free-form query (not mirrored)"},
    }, "required": ["region"]})
}

/// A raw JSON Schema 2020-12 input schema (`$defs`, `$ref`, `$anchor`,
/// composition and conditionals), which must survive `tools/list` unchanged.
fn json_schema_2020_12() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"address": {"$anchor": "addressDef", "type": "object", "properties": {
            "street": {"type": "string"}, "city": {"type": "string"}}}},
        "properties": {
            "name": {"type": "string"},
            "address": {"$ref": "#/$defs/address"},
            "contactMethod": {"type": "string", "enum": ["phone", "email"]},
            "phone": {"type": "string"},
            "email": {"type": "string"},
        },
        "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
        "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
        "then": {"required": ["phone"]},
        "else": {"required": ["email"]},
        "additionalProperties": false,
    })
}

fn user_schema() -> Value {
    json!({"type": "object", "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    }, "required": ["username", "email"]})
}

/// SEP-1034: a default on every primitive kind.
fn defaults_schema() -> Value {
    json!({"type": "object", "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {"type": "string", "description": "User status",
            "enum": ["active", "inactive", "pending"], "default": "active"},
        "verified": {"type": "boolean", "description": "Verification status", "default": true},
    }, "required": []})
}

/// SEP-1330: the five enum shapes.
fn enums_schema() -> Value {
    let titled = |prefix: &str| {
        json!([
            {"const": "value1", "title": format!("First {prefix}")},
            {"const": "value2", "title": format!("Second {prefix}")},
            {"const": "value3", "title": format!("Third {prefix}")},
        ])
    };
    json!({"type": "object", "properties": {
        "untitledSingle": {"type": "string", "description": "Select one option",
            "enum": ["option1", "option2", "option3"]},
        "titledSingle": {"type": "string", "description": "Select one option with titles",
            "oneOf": titled("Option")},
        "legacyEnum": {"type": "string", "description": "Select one option (legacy)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"]},
        "untitledMulti": {"type": "array", "description": "Select multiple options",
            "minItems": 1, "maxItems": 3,
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {"type": "array", "description": "Select multiple options with titles",
            "minItems": 1, "maxItems": 3, "items": {"anyOf": titled("Choice")}},
    }, "required": ["untitledSingle", "titledSingle", "legacyEnum", "untitledMulti", "titledMulti"]})
}

fn prompt_list(shared: &Shared) -> Value {
    let mut prompts = static_prompts();
    if let Some(list) = prompts.as_array_mut() {
        list.push(json!({"name": input_required::PROMPT,
            "description": "A prompt that asks the user for context first (2026-07-28: input_required)"}));
        if shared.extra_prompt.load(Ordering::Relaxed) {
            list.push(json!({"name": EXTRA_PROMPT, "description": "A prompt added by test_trigger_prompt_change"}));
        }
    }
    prompts
}

/// The prompts that are always listed, in order.
fn static_prompts() -> Value {
    let arg = |name: &str, description: &str| json!({"name": name, "description": description, "required": true});
    json!([
        {"name": "test_simple_prompt", "description": "A simple prompt without arguments"},
        {"name": "test_prompt_with_arguments", "description": "A prompt with required arguments",
            "arguments": [arg("arg1", "First test argument"), arg("arg2", "Second test argument")]},
        {"name": "test_prompt_with_embedded_resource", "description": "A prompt that includes an embedded resource",
            "arguments": [arg("resourceUri", "URI of the resource to embed")]},
        {"name": "test_prompt_with_image", "description": "A prompt that includes image content"},
    ])
}

/// `prompts/get`: the messages of prompt `name` with `args`, or -32602.
fn get_prompt(name: &str, args: &Value) -> Result<Value, ErrorObject> {
    let arg = |key: &str| {
        args.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format_args!("missing required argument '{key}'")))
    };
    let user = |content: Value| json!({"role": "user", "content": content});
    let text = |t: &str| user(json!({"type": "text", "text": t}));
    let messages = match name {
        "test_simple_prompt" => json!([text("This is a simple prompt for testing.")]),
        "test_prompt_with_arguments" => {
            let (a, b) = (arg("arg1")?, arg("arg2")?);
            json!([text(&format!(
                "Prompt with arguments: arg1='{a}', arg2='{b}'"
            ))])
        }
        "test_prompt_with_embedded_resource" => {
            let uri = arg("resourceUri")?;
            json!([
                user(
                    json!({"type": "resource", "resource": {"uri": uri, "mimeType": "text/plain",
                    "text": "Embedded resource content for testing."}})
                ),
                text("Please process the embedded resource above."),
            ])
        }
        "test_prompt_with_image" => json!([user(image()), text("Please analyze the image above.")]),
        _ => return Err(invalid(format_args!("unknown prompt '{name}'"))),
    };
    Ok(json!({"messages": messages}))
}

fn resource_list() -> Value {
    json!([
        {"uri": "test://static-text", "name": "Static Text Resource",
            "description": "A static text resource for testing", "mimeType": "text/plain"},
        {"uri": "test://static-binary", "name": "Static Binary Resource",
            "description": "A static binary resource (image) for testing", "mimeType": "image/png"},
        {"uri": "test://watched-resource", "name": "Watched Resource",
            "description": "A resource that can be subscribed to", "mimeType": "text/plain"},
    ])
}

/// The `{id}` of a `test://template/{id}/data` URI (one non-empty path segment).
fn template_id(uri: &str) -> Option<&str> {
    let id = uri
        .strip_prefix("test://template/")?
        .strip_suffix("/data")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// One `resources/read` content item for `uri`, if it exists.
fn read_resource(uri: &str) -> Option<Value> {
    let text = |mime: &str, text: &str| json!({"uri": uri, "mimeType": mime, "text": text});
    match uri {
        "test://static-text" => Some(text(
            "text/plain",
            "This is the content of the static text resource.",
        )),
        "test://static-binary" => Some(json!({"uri": uri, "mimeType": "image/png", "blob": PNG})),
        "test://watched-resource" => Some(text("text/plain", "Watched resource content")),
        _ => {
            let id = template_id(uri)?;
            let data =
                json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
            Some(text("application/json", &data.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_wire::jsonrpc::code;

    #[test]
    fn catalogue_is_complete() {
        let shared = Shared::default();
        let tools = tool_list(&shared);
        let tools = tools.as_array().map(Vec::as_slice).unwrap_or_default();
        assert_eq!(tools.len(), 35);
        let names: Vec<_> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(!names.contains(&EXTRA_TOOL));
        shared.extra_tool.store(true, Ordering::Relaxed);
        assert_eq!(tool_list(&shared).as_array().map(Vec::len), Some(36));
        assert_eq!(tools[0]["name"], "test_simple_text");
        assert!(tools[0]["inputSchema"].get("required").is_none());
        for t in tools {
            assert!(
                t["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{t}"
            );
            assert!(t["inputSchema"].is_object(), "{t}");
        }
        let schema = json_schema_2020_12();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["additionalProperties"], false);
        for p in prompt_list(&shared).as_array().into_iter().flatten() {
            assert!(p["description"].is_string(), "{p}");
        }
    }

    #[test]
    fn resources_and_templates() {
        assert_eq!(template_id("test://template/123/data"), Some("123"));
        assert_eq!(template_id("test://template//data"), None);
        assert_eq!(template_id("test://template/1/2/data"), None);
        assert_eq!(template_id("test://template/123"), None);
        let t = read_resource("test://template/123/data").unwrap_or_default();
        assert!(t["text"].as_str().is_some_and(|s| s.contains("123")));
        assert_eq!(t["mimeType"], "application/json");
        assert_eq!(
            read_resource("test://static-binary").unwrap_or_default()["blob"],
            PNG
        );
        assert!(read_resource("test://static-text").is_some());
        assert!(read_resource("test://nonexistent").is_none());
        for r in resource_list().as_array().into_iter().flatten() {
            let uri = r["uri"].as_str().unwrap_or("");
            assert!(read_resource(uri).is_some(), "{uri}");
        }
    }

    #[test]
    fn prompts() {
        let r = get_prompt(
            "test_prompt_with_arguments",
            &json!({"arg1": "testValue1", "arg2": "testValue2"}),
        )
        .unwrap_or_default();
        let s = r["messages"].to_string();
        assert!(s.contains("testValue1") && s.contains("testValue2"));
        assert_eq!(
            get_prompt("test_prompt_with_arguments", &json!({"arg1": "x"}))
                .unwrap_err()
                .code,
            code::INVALID_PARAMS
        );
        let r = get_prompt(
            "test_prompt_with_embedded_resource",
            &json!({"resourceUri": "test://example-resource"}),
        )
        .unwrap_or_default();
        assert_eq!(r["messages"][0]["content"]["type"], "resource");
        assert_eq!(
            r["messages"][0]["content"]["resource"]["uri"],
            "test://example-resource"
        );
        let r = get_prompt("test_prompt_with_image", &Value::Null).unwrap_or_default();
        assert_eq!(r["messages"][0]["content"]["type"], "image");
        assert!(get_prompt("test_simple_prompt", &Value::Null).is_ok());
        assert!(get_prompt("nope", &Value::Null).is_err());
    }

    #[test]
    fn elicitation_schemas() {
        let d = defaults_schema();
        assert_eq!(d["properties"]["score"]["default"], 95.5);
        let status = &d["properties"]["status"];
        let in_enum = status["enum"]
            .as_array()
            .is_some_and(|e| e.contains(&status["default"]));
        assert!(in_enum);
        let e = enums_schema();
        let p = &e["properties"];
        assert!(p["untitledSingle"].get("oneOf").is_none());
        assert!(p["titledSingle"].get("enum").is_none());
        assert_eq!(p["titledSingle"]["oneOf"][0]["title"], "First Option");
        assert_eq!(
            p["titledMulti"]["items"]["anyOf"][2]["title"],
            "Third Choice"
        );
        assert_eq!(
            p["legacyEnum"]["enum"].as_array().map(Vec::len),
            p["legacyEnum"]["enumNames"].as_array().map(Vec::len)
        );
    }

    #[test]
    fn custom_headers_tool_is_valid() {
        let schema = custom_headers_schema();
        let names: Vec<_> = schema["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, p)| p["x-mcp-header"].as_str())
            .collect();
        assert_eq!(names, ["Priority", "Region", "Verbose"]);
        assert!((listen_support().known_uri)("test://static-text"));
        assert!(!(listen_support().known_uri)("test://nope"));
    }

    #[test]
    fn capabilities_and_streaming() {
        assert_eq!(capabilities(Era::Modern)["tools"]["listChanged"], true);
        assert_eq!(capabilities(Era::Legacy)["resources"]["subscribe"], true);
        assert!(
            capabilities(Era::Modern)["resources"]
                .get("subscribe")
                .is_none()
        );
        assert!(streams(Era::Modern, "test_tool_with_progress"));
        assert!(streams(Era::Legacy, "test_sampling"));
        assert!(!streams(Era::Modern, "test_sampling"));
        assert!(!streams(Era::Legacy, "test_simple_text"));
    }
}
