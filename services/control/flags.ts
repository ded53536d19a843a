/**
 * Feature flags: the flag model, per-user evaluation with stable percentage rollout, overload
 * shedding of non-critical flags, and the FlagStore that merges what the sources (a flags file,
 * Redis) report.
 *
 * Rollout buckets follow the scheme Unleash and flagd use: bucket = murmur3_x86_32("flag:user",
 * seed 0) mod 100, and a user is in when bucket < rolloutPercent. The bucket of a user never
 * changes, so raising the percentage only adds users; nobody who had the feature loses it.
 *
 * A flag that no source defines is ON: features ship enabled and a flag is how an operator turns
 * one off or rolls it out, so an empty or missing flags file never disables anything.
 */
import { EventEmitter } from 'node:events';

export interface FeatureFlag {
  readonly name: string;
  readonly enabled: boolean;
  /**
   * 0-100: share of users (by stable hash) that get the flag. A fraction is allowed from the file
   * and Redis (the FeatureFlag CRD takes integers only) and evaluates as the next whole number up:
   * buckets are whole, so `bucket < 25.5` holds for exactly the buckets `bucket < 26` does.
   */
  readonly rolloutPercent: number;
  /** Users that get the flag whenever it is enabled, whatever the percentage. */
  readonly betaUsers: readonly string[];
  /** Shed (off for everyone) while the server is overloaded. */
  readonly nonCritical: boolean;
  readonly description: string;
}

/** Flag names of the built-in features. */
export const Flag = {
  History: 'history',
  Direct: 'direct',
  Compression: 'compression',
} as const;
export type Flag = (typeof Flag)[keyof typeof Flag];

/** MurmurHash3 x86 32-bit of the UTF-8 bytes of `key`. */
export function murmur3(key: string | Uint8Array, seed = 0): number {
  const data = typeof key === 'string' ? Buffer.from(key, 'utf8') : key;
  const len = data.length;
  const nblocks = len >>> 2;
  const c1 = 0xcc9e2d51;
  const c2 = 0x1b873593;
  let h = seed >>> 0;
  for (let i = 0; i < nblocks; i++) {
    const o = i << 2;
    let k = data[o] | (data[o + 1] << 8) | (data[o + 2] << 16) | (data[o + 3] << 24);
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = nblocks << 2;
  const rem = len & 3;
  if (rem > 0) {
    let k = 0;
    if (rem === 3) k ^= data[tail + 2] << 16;
    if (rem >= 2) k ^= data[tail + 1] << 8;
    k ^= data[tail];
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
  }
  h ^= len;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The user's rollout bucket for a flag, 0..99. */
export function bucket(flag: string, user: string): number {
  return murmur3(`${flag}:${user}`) % 100;
}

/** Whether a flag is on for a user, ignoring overload. */
export function evaluate(flag: FeatureFlag, user: string): boolean {
  if (!flag.enabled) return false;
  if (flag.betaUsers.includes(user)) return true;
  return flag.rolloutPercent > 0 && bucket(flag.name, user) < flag.rolloutPercent;
}

/**
 * Most flags the effective set may hold (file and Redis together), and so any one source. Every
 * welcome carries one boolean per defined flag and every welcome evaluates all of them: with
 * names of at most 64 characters an entry is at most 73 bytes (`"<64 chars>":false,`), so 1,000
 * flags are under 75 KB of welcome, far inside the MAX_FRAME_BYTES (1 MiB by default) the same
 * welcome advertises. Without a cap a 100,000-flag file made every welcome 1.84 MB and its reload
 * stalled the event loop long enough for the server to call itself overloaded.
 */
export const MAX_FLAGS = 1000;

/**
 * Largest flags file, in bytes. Checked before parsing: the parse itself is what blocks the event
 * loop, and a file can be big without many flags (long beta lists). 1,000 flags with room for
 * descriptions and beta users fit.
 */
export const MAX_FLAGS_FILE_BYTES = 1024 * 1024;

export class FlagError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FlagError';
  }
}

/**
 * Validate one flag from untrusted input (a file, Redis, the CLI). Missing fields take the
 * defaults of a fully rolled-out flag: enabled, 100%, no beta users, critical.
 */
export function parseFlag(value: unknown, nameHint?: string): FeatureFlag {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new FlagError(nameHint === undefined ? 'a flag must be an object' : `flag "${nameHint}" must be an object`);
  const v = value as Record<string, unknown>;
  const name = v.name ?? nameHint;
  if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(name)) throw new FlagError(`flag name must be 1-64 characters of [A-Za-z0-9_.-], got ${JSON.stringify(name)}`);
  if (nameHint !== undefined && v.name !== undefined && v.name !== nameHint) throw new FlagError(`flag "${nameHint}" has a different name field "${String(v.name)}"`);
  const enabled = v.enabled ?? true;
  if (typeof enabled !== 'boolean') throw new FlagError(`flag "${name}": enabled must be true or false`);
  const pct = v.rolloutPercent ?? 100;
  // Any number 0-100, fractions included: flags files and Redis hashes written before the CRD
  // existed hold values such as 12.5, and refusing them rejects the whole file (every flag, kill
  // switches included, back to its default) for a value that always worked. The value is kept as
  // written; evaluate() compares it with a whole bucket, so 12.5 rolls out as 13 does. The
  // FeatureFlag CRD's integer-only schema is the operator's API, not a rule of the flag model.
  if (typeof pct !== 'number' || !Number.isFinite(pct) || pct < 0 || pct > 100) throw new FlagError(`flag "${name}": rolloutPercent must be a number 0-100`);
  const beta = v.betaUsers ?? [];
  if (!Array.isArray(beta) || beta.some((u) => typeof u !== 'string')) throw new FlagError(`flag "${name}": betaUsers must be a list of user ids`);
  const nonCritical = v.nonCritical ?? false;
  if (typeof nonCritical !== 'boolean') throw new FlagError(`flag "${name}": nonCritical must be true or false`);
  const description = v.description ?? '';
  if (typeof description !== 'string') throw new FlagError(`flag "${name}": description must be a string`);
  return { name, enabled, rolloutPercent: pct, betaUsers: beta as string[], nonCritical, description };
}

/**
 * A whole flag set from a parsed document: a list of flags with names, or an object keyed by
 * flag name, either of them optionally under a top-level `flags` key.
 */
export function parseFlagSet(doc: unknown): FeatureFlag[] {
  if (doc === null || doc === undefined) return [];
  let body: unknown = doc;
  if (typeof doc === 'object' && !Array.isArray(doc) && Object.hasOwn(doc as object, 'flags')) body = (doc as { flags: unknown }).flags;
  if (body === null || body === undefined) return [];
  // Count before validating: past the cap the set is rejected whole, and there is no point
  // checking 100,000 entries to say so.
  const count = Array.isArray(body) ? body.length : body !== null && typeof body === 'object' ? Object.keys(body).length : 0;
  if (count > MAX_FLAGS) throw new FlagError(tooMany(count));
  const out: FeatureFlag[] = [];
  if (Array.isArray(body)) for (const f of body) out.push(parseFlag(f));
  else if (typeof body === 'object') for (const [name, f] of Object.entries(body as Record<string, unknown>)) out.push(parseFlag(f, name));
  else throw new FlagError('a flag set must be a list of flags or an object keyed by flag name');
  const seen = new Set<string>();
  for (const f of out) {
    if (seen.has(f.name)) throw new FlagError(`flag "${f.name}" is defined twice`);
    seen.add(f.name);
  }
  return out;
}

function tooMany(count: number): string {
  return `${count} flags, more than the limit of ${MAX_FLAGS}`;
}

/** What the flags module needs from the performance monitor (services/telemetry/monitor.ts). */
export interface OverloadSignal {
  readonly overloaded: boolean;
  on(event: 'overloaded' | 'recovered', listener: () => void): unknown;
  off(event: 'overloaded' | 'recovered', listener: () => void): unknown;
}

/** What a gateway reads of its flags (a FlagStore; handed to GatewayServer at construction). */
export interface FeatureFlags {
  /** Whether `flag` is on for `user`; undefined flags are on. */
  isEnabled(flag: string, user: string): boolean;
  /** Every defined flag's state for a user, as announced in `welcome`. */
  flagsFor(user: string): Record<string, boolean>;
  /** Values of the `feature_enabled{flag}` gauge. */
  featureStates(): Iterable<readonly [string, boolean]>;
  /** nonCritical flags are off for overload. */
  readonly isShedding: boolean;
}

/**
 * The effective flag set. Each source replaces its own set; when two sources define the same
 * flag, the one registered later wins (file first, Redis after it). Emits 'change' after every
 * update and every overload transition.
 */
export class FlagStore extends EventEmitter implements FeatureFlags {
  private readonly sources = new Map<string, ReadonlyMap<string, FeatureFlag>>();
  private effective = new Map<string, FeatureFlag>();
  private monitor: OverloadSignal | null = null;
  private shedding = false;
  private readonly onOverloaded = () => this.setShedding(true);
  private readonly onRecovered = () => this.setShedding(false);

  /**
   * Replace the flags a source reports. Throws a FlagError, and changes nothing, when the
   * effective set would hold more than MAX_FLAGS: whatever feeds the store (a file, Redis written
   * by the CLI or the operator), welcome stays bounded, and the source keeps its last good set.
   */
  setSource(source: string, flags: readonly FeatureFlag[]): void {
    const own = new Map(flags.map((f) => [f.name, f]));
    if (own.size > MAX_FLAGS) throw new FlagError(tooMany(own.size));
    const sources = new Map(this.sources).set(source, own);
    const merged = new Map<string, FeatureFlag>();
    for (const set of sources.values()) for (const [n, f] of set) merged.set(n, f);
    if (merged.size > MAX_FLAGS) throw new FlagError(`${tooMany(merged.size)} with the other sources' flags`);
    this.sources.set(source, own);
    this.effective = merged;
    this.emit('change');
  }

  /** Follow an overload signal: nonCritical flags are off while it says overloaded. */
  attachMonitor(monitor: OverloadSignal): void {
    this.detachMonitor();
    this.monitor = monitor;
    monitor.on('overloaded', this.onOverloaded);
    monitor.on('recovered', this.onRecovered);
    this.setShedding(monitor.overloaded);
  }

  detachMonitor(): void {
    if (this.monitor === null) return;
    this.monitor.off('overloaded', this.onOverloaded);
    this.monitor.off('recovered', this.onRecovered);
    this.monitor = null;
    this.setShedding(false);
  }

  get isShedding(): boolean {
    return this.shedding;
  }

  private setShedding(on: boolean): void {
    if (on === this.shedding) return;
    this.shedding = on;
    this.emit('change');
  }

  get(name: string): FeatureFlag | undefined {
    return this.effective.get(name);
  }

  list(): FeatureFlag[] {
    return [...this.effective.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Whether `name` is on for `user`. Undefined flags are on. */
  isEnabled(name: string, user: string): boolean {
    const f = this.effective.get(name);
    if (f === undefined) return true;
    if (f.nonCritical && this.shedding) return false;
    return evaluate(f, user);
  }

  /**
   * Every defined flag's state for a user, as announced in `welcome`. The object has no
   * prototype: flag names are operator input, and on a plain object `__proto__` would set the
   * prototype instead of a key (the flag vanished from welcome), while a reader looking up an
   * undefined `constructor` or `toString` flag would find Object.prototype's function.
   */
  flagsFor(user: string): Record<string, boolean> {
    const out = Object.create(null) as Record<string, boolean>;
    for (const name of this.effective.keys()) out[name] = this.isEnabled(name, user);
    return out;
  }

  /**
   * Values of the `feature_enabled{flag}` gauge: a flag counts as on when it is enabled, not shed,
   * and reaches someone (a rollout share or beta users). The shape is what the metrics registry's
   * MetricsSource.features() expects.
   */
  featureStates(): Array<readonly [string, boolean]> {
    return this.list().map((f) => [f.name, f.enabled && !(f.nonCritical && this.shedding) && (f.rolloutPercent > 0 || f.betaUsers.length > 0)] as const);
  }
}

/** `feature_enabled{flag}` values of a store; the metrics registry reads this at scrape time. */
export function flagGaugeValues(store: FlagStore): Array<readonly [string, boolean]> {
  return store.featureStates();
}
