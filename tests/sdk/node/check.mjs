// The official OpenAI Node SDK, the Vercel AI SDK's default `openai` provider (Responses) and Codex CLI
// (`codex exec`, wire_api = "responses") against a running Switchyard, for each model named.
//
//   node check.mjs BASE_URL KEY MODEL...
//
// Prints one JSON line per check: {"name", "ok", "error"?}. Run by tests/sdk/responses_sdk_check.py.

import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import OpenAI from "openai";
import { generateText, streamText, stepCountIs, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { z } from "zod";

const [base, key, ...models] = process.argv.slice(2);

async function check(name, fn) {
  try {
    await fn();
    console.log(JSON.stringify({ name, ok: true }));
  } catch (e) {
    console.log(JSON.stringify({ name, ok: false, error: String(e?.stack ?? e).slice(0, 2000) }));
  }
}

function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

const client = new OpenAI({ apiKey: key, baseURL: `${base}/v1`, maxRetries: 0 });
const provider = createOpenAI({ apiKey: key, baseURL: `${base}/v1` });
const weather = {
  type: "function",
  name: "get_weather",
  description: "The weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false },
  strict: true,
};

function codexExec(model, prompt) {
  const home = mkdtempSync(join(tmpdir(), "codex-home-"));
  // Offline: no update check, analytics, plugin sync or model discovery; no prompts, no sandbox.
  writeFileSync(join(home, "config.toml"), `
model = "${model}"
model_provider = "gateway"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false
web_search = "disabled"

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
metrics_exporter = "none"
trace_exporter = "none"

[history]
persistence = "none"

[features]
plugins = false
apps = false
remote_plugin = false
api_key_model_discovery = false
tool_suggest = false

[model_providers.gateway]
name = "Switchyard"
base_url = "${base}/v1"
env_key = "SWITCHYARD_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
supports_websockets = false
`);
  const work = mkdtempSync(join(tmpdir(), "codex-work-"));
  const codex = join(import.meta.dirname, "node_modules", ".bin", "codex");
  return spawnSync(codex, ["exec", "--skip-git-repo-check", "--strict-config", "--ephemeral", "-C", work, prompt], {
    env: { ...process.env, CODEX_HOME: home, SWITCHYARD_KEY: key },
    input: "",
    encoding: "utf8",
    timeout: 180_000,
  });
}

for (const model of models) {
  await check(`node SDK: responses.create, streamed and with tools (${model})`, async () => {
    const r = await client.responses.create({ model, input: "Say hello" });
    assert(r.id.startsWith("resp_") && r.output_text, JSON.stringify(r));
    const stream = await client.responses.create({ model, input: "Say hello", stream: true });
    let text = "";
    let last;
    for await (const e of stream) {
      if (e.type === "response.output_text.delta") text += e.delta;
      last = e;
    }
    const done = last.response.output.filter((i) => i.type === "message").flatMap((i) => i.content).map((p) => p.text).join("");
    assert(last.type === "response.completed" && done === text, `${last?.type}: ${done} vs ${text}`);
    const t = await client.responses.create({ model, input: "Weather in Paris?", tools: [weather] });
    const call = t.output.find((i) => i.type === "function_call");
    assert(call && JSON.parse(call.arguments).city, JSON.stringify(t.output));
    const c = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 8 });
    assert(c.choices[0].text, JSON.stringify(c));
  });

  await check(`Vercel AI SDK: generateText, streamText, multi-turn, tool loop (${model})`, async () => {
    const first = await generateText({ model: provider(model), prompt: "My name is Ada." });
    assert(first.text, "text");
    const messages = [{ role: "user", content: "My name is Ada." }, ...first.response.messages, { role: "user", content: "And mine?" }];
    // With store on (the SDK's default), earlier output goes back as item_references.
    const second = await generateText({ model: provider(model), messages });
    assert(second.text, "second turn");
    const threaded = await generateText({
      model: provider(model),
      prompt: "Again?",
      providerOptions: { openai: { previousResponseId: first.providerMetadata.openai.responseId } },
    });
    assert(threaded.text, "previous_response_id");
    const streamed = streamText({ model: provider(model), prompt: "Say hello" });
    let text = "";
    for await (const piece of streamed.textStream) text += piece;
    assert(text, "stream");
    let called = 0;
    const tools = {
      get_weather: tool({
        description: "The weather in a city",
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => {
          called += 1;
          return { city, temp_c: 21 };
        },
      }),
    };
    const looped = await generateText({ model: provider(model), prompt: "Weather in Paris?", tools, stopWhen: stepCountIs(3) });
    assert(called === 1 && looped.text, `tool calls: ${called}, text: ${looped.text}`);
  });

  await check(`Codex CLI: codex exec completes a task (${model})`, async () => {
    const run = codexExec(model, "Say hi, then stop.");
    assert(run.status === 0, `exit ${run.status}: ${run.stderr?.slice(-1500)}`);
    assert(run.stdout.trim().length > 0, `no final message: ${run.stderr?.slice(-1500)}`);
  });
}
