// A host built on the official TypeScript MCP SDK client, driving aegis-mcp over stdio.
//
// Usage: node ts_host.mjs SCENARIO SHIM SHIM_ARGS_JSON [...]   (AEGIS_NPM_DIR: the npm folder)
// Every line on stdout is one JSON object. The SDK is used as hosts use it: default request
// timeout (60 s), no resetTimeoutOnProgress. Scenarios:
//   schemas [SAMPLES_JSON]  compile every inputSchema/outputSchema with ajv (2020-12) and
//            validate each [tool, arguments] sample
//   repeat TOOL ARGS_JSON  call, print the result, wait for a line on stdin, call again
//   timeout TOOL ARGS_JSON call with a 1 s timeout, print the error, wait for a line
//   task TOOL ARGS_JSON    list tools, then callToolStream: print every message
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const npm = process.env.AEGIS_NPM_DIR;
const load = (rel) => import(pathToFileURL(join(npm, 'node_modules', rel)).href);
const { Client } = await load('@modelcontextprotocol/sdk/dist/esm/client/index.js');
const { StdioClientTransport } = await load('@modelcontextprotocol/sdk/dist/esm/client/stdio.js');

const [scenario, shim, shimArgs, ...rest] = process.argv.slice(2);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const transport = new StdioClientTransport({ command: shim, args: JSON.parse(shimArgs), stderr: 'inherit' });
const client = new Client({ name: 'ts-host', version: '0' });
await client.connect(transport);
out({ event: 'connected', server: client.getServerVersion(), capabilities: client.getServerCapabilities() });

try {
  if (scenario === 'schemas') {
    const { default: Ajv2020 } = await load('ajv/dist/2020.js');
    const ajv = new Ajv2020({ strict: true, allErrors: true });
    const { tools } = await client.listTools();
    const report = [];
    for (const tool of tools) {
      const entry = { name: tool.name, title: tool.title, annotations: tool.annotations, execution: tool.execution };
      try {
        entry.input = ajv.compile(tool.inputSchema) ? 'ok' : 'no';
        if (tool.outputSchema) entry.output = ajv.compile(tool.outputSchema) ? 'ok' : 'no';
      } catch (err) {
        entry.error = String(err.message || err);
      }
      report.push(entry);
    }
    // the samples the test asks about: [tool, arguments] pairs, validated by the compiled schema
    const samples = JSON.parse(rest[0] || '[]');
    const verdicts = samples.map(([name, args]) => {
      const tool = tools.find((t) => t.name === name);
      return ajv.validate(tool.inputSchema, args);
    });
    out({ event: 'schemas', tools: report, verdicts });
  } else if (scenario === 'repeat') {
    const [tool, args] = [rest[0], JSON.parse(rest[1])];
    const started = Date.now();
    out({ event: 'result', ms: Date.now() - started, result: await client.callTool({ name: tool, arguments: args }) });
    await lines.next();
    const again = Date.now();
    out({ event: 'result', ms: Date.now() - again, result: await client.callTool({ name: tool, arguments: args }) });
  } else if (scenario === 'timeout') {
    // a host whose own timeout (here 1 s instead of 60 s) ends the call first
    const [tool, args] = [rest[0], JSON.parse(rest[1])];
    try {
      await client.callTool({ name: tool, arguments: args }, undefined, { timeout: 1000 });
      out({ event: 'answered' });
    } catch (err) {
      out({ event: 'timed_out', code: err.code, message: String(err.message) });
    }
    await lines.next(); // let the shim's stderr arrive before closing
  } else if (scenario === 'task') {
    const [tool, args] = [rest[0], JSON.parse(rest[1])];
    await client.listTools(); // caches which tools support tasks
    for await (const message of client.experimental.tasks.callToolStream({ name: tool, arguments: args })) {
      out({ event: message.type, task: message.task, result: message.result, error: message.error && String(message.error.message) });
    }
  }
} catch (err) {
  out({ event: 'exception', message: String(err && err.message) });
} finally {
  await client.close();
}
