// The complete plugin example of docs/plugins.md, taken from the doc itself: it type-checks
// under the project's strict settings, registers on a real server, and behaves as documented.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import ts from 'typescript';
import type { MessageProcessor } from '../../services/gateway';
import { builtinPlugins } from '../../services/plugins';
import { tempDir } from '../helpers/cli';
import { startServer, type TestServer } from '../helpers/server';
import { helloClient, type WireClient } from '../helpers/wire';

const ROOT = resolve(__dirname, '../../..');

function exampleSource(): string {
  const md = readFileSync(join(ROOT, 'docs/plugins.md'), 'utf8');
  const m = /<!-- example: services\/plugins\/dice\.ts -->\n```ts\n([\s\S]*?)\n```/.exec(md);
  assert.ok(m, 'the example block is in docs/plugins.md');
  return m[1];
}

/** Compile the example as if it were services/plugins/dice.ts; returns the loaded module. */
function loadExample(): { dicePlugin: MessageProcessor } {
  const src = exampleSource();
  // Type-check in place of services/plugins/dice.ts, against the real sources.
  const fileName = join(ROOT, 'services/plugins/__doc_example__.ts');
  const options: ts.CompilerOptions = { strict: true, noEmit: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS, types: ['node'], skipLibCheck: true, esModuleInterop: true };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) =>
    resolve(name) === fileName ? ts.createSourceFile(name, src, lang) : getSourceFile(name, lang, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => resolve(name) === fileName || fileExists(name);
  const program = ts.createProgram([fileName], options, host);
  const diags = ts.getPreEmitDiagnostics(program, program.getSourceFile(fileName));
  assert.deepEqual(diags.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')), [], 'the example type-checks');
  // Run it: transpile and point its relative imports at the compiled services.
  const js = ts
    .transpileModule(src, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } })
    .outputText.replace(/require\("\.\.\/(\w+)"\)/g, (_, dir: string) => `require(${JSON.stringify(resolve(__dirname, '../../services', dir))})`);
  const dir = tempDir('switchboard-plugin-');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'dice.js');
  writeFileSync(file, js);
  return require(file) as { dicePlugin: MessageProcessor };
}

describe('docs/plugins.md example (dice)', () => {
  let srv: TestServer;
  let a: WireClient;
  let b: WireClient;
  before(async () => {
    const { dicePlugin } = loadExample();
    srv = await startServer({}, { plugins: [...builtinPlugins(), dicePlugin] });
    a = await helloClient(srv.port, 'ada');
    b = await helloClient(srv.port, 'bo');
    await a.join('tavern');
    await b.join('tavern');
  });
  after(async () => {
    a?.destroy();
    b?.destroy();
    await srv?.close();
  });

  test('roll: the roller gets rolled, every member gets the same room message, history keeps it', async () => {
    const r = await a.request({ type: 'roll', room: 'tavern', sides: 20 });
    assert.equal(r.type, 'rolled');
    assert.equal(r.sides, 20);
    assert.ok(Number.isInteger(r.value) && (r.value as number) >= 1 && (r.value as number) <= 20);
    assert.equal(r.seq, 1);
    for (const c of [a, b]) {
      const m = await c.nextOfType('message');
      assert.equal(m.from, 'ada');
      assert.deepEqual(m.data, { dice: { sides: 20, value: r.value } });
      assert.equal(m.seq, 1);
    }
    const h = await b.request({ type: 'history', room: 'tavern' });
    assert.equal((h.messages as unknown[]).length, 1);
  });

  test('default six sides; values stay in range', async () => {
    for (let i = 0; i < 30; i++) {
      const r = await a.request({ type: 'roll', room: 'tavern' });
      assert.equal(r.sides, 6);
      assert.ok((r.value as number) >= 1 && (r.value as number) <= 6);
    }
  });

  test('errors as documented: bad sides, missing room, not a member', async () => {
    const e1 = await a.request({ type: 'roll', room: 'tavern', sides: 1 });
    assert.equal(e1.code, 'bad_request');
    assert.match(String(e1.message), /sides/);
    assert.equal((await a.request({ type: 'roll' })).code, 'bad_request');
    assert.equal((await a.request({ type: 'roll', room: 'elsewhere' })).code, 'not_in_room');
    assert.equal((await a.request({ type: 'join_room', room: 'x' })).type, 'ok', 'built-ins still work');
  });
});
