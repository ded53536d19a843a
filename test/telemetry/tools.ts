/**
 * Helpers of the telemetry tests: HTTP probes of the admin port, a steady chat load, and promtool
 * (which must exist: a missing tool fails the test). Free ports, Redis and Prometheus come from
 * test/helpers.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { requireTool } from '../helpers/prometheus';
import { helloClient, type WireClient } from '../helpers/wire';

export { requireTool };

export interface HttpResult {
  status: number;
  type: string;
  body: string;
}

export async function httpGet(port: number, path: string): Promise<HttpResult> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.text() };
}

export async function getJson(port: number, path: string): Promise<Record<string, unknown>> {
  const r = await httpGet(port, path);
  return JSON.parse(r.body) as Record<string, unknown>;
}

/** The value of one unlabelled sample (or the first matching line) in a text exposition. */
export function sampleValue(exposition: string, series: string): number | undefined {
  for (const line of exposition.split('\n')) {
    if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

/** Run `promtool check metrics` on an exposition; returns its combined output when it fails. */
export function promtoolCheck(exposition: string): { ok: boolean; output: string } {
  const r = spawnSync(requireTool('promtool'), ['check', 'metrics'], { input: exposition, encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.error, undefined, `promtool could not run: ${String(r.error)}`);
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

/**
 * A steady chat load: `sender` says `perTick` messages in `room` every 10 ms (without ids, the
 * way a busy client streams), and `receiver` is in the room so every message is fanned out.
 */
export class ChatLoad {
  sent = 0;
  private timer: NodeJS.Timeout | null = null;
  private constructor(
    readonly sender: WireClient,
    readonly receiver: WireClient,
  ) {}

  static async start(port: number, room: string, perTick: number): Promise<ChatLoad> {
    const sender = await helloClient(port, `${room}-sender`);
    const receiver = await helloClient(port, `${room}-receiver`);
    await sender.join(room);
    await receiver.join(room);
    const load = new ChatLoad(sender, receiver);
    load.timer = setInterval(() => {
      let lines = '';
      for (let i = 0; i < perTick; i++) lines += JSON.stringify({ type: 'send_chat', room, data: { n: load.sent++ } }) + '\n';
      sender.writeRaw(lines);
      // The load is not under test: keep the inboxes from growing without bound.
      sender.inbox.length = 0;
      receiver.inbox.length = 0;
      sender.all.length = 0;
      receiver.all.length = 0;
    }, 10);
    return load;
  }

  pause(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  stop(): void {
    this.pause();
    this.sender.destroy();
    this.receiver.destroy();
  }
}
