// One tools/call taken as an MCP task by the official TypeScript SDK's task client, against a
// Countersign agent endpoint: node call_as_task.mjs <endpoint url> <token>. Prints each message
// the stream yields (taskCreated, taskStatus…, then result or error) as a JSON line.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CallToolResultSchema } from "@modelcontextprotocol/sdk/types.js";

const [url, token] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "countersign-tasks-test", version: "1.0.0" });
await client.connect(transport);

const stream = client.experimental.tasks.callToolStream(
  { name: "issue_refund", arguments: { order_id: "ORD-1011", amount: 150, reason: "broken" } },
  CallToolResultSchema,
  { task: { ttl: 60000 } },
);
let failed = false;
for await (const message of stream) {
  if (message.type === "error") {
    failed = true;
    console.log(JSON.stringify({ type: "error", error: String(message.error) }));
  } else {
    console.log(JSON.stringify(message));
  }
}
await client.close();
process.exit(failed ? 1 : 0);
