/**
 * How many connections a gateway may hold: MAX_CONNECTIONS, or, by default, derived from the
 * process's descriptor limit so that connections are refused before accept(2) and the process's
 * own reads (Redis, /proc, files) start failing for lack of descriptors.
 */
import { readFileSync } from 'node:fs';

/**
 * The soft limit on open files of this process (RLIMIT_NOFILE, what `ulimit -n` shows), read from
 * /proc/self/limits (Node has no getrlimit); null when unknown (not Linux) or unlimited.
 */
export function descriptorLimit(limitsText?: string): number | null {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/limits', 'utf8');
    } catch {
      return null;
    }
  }
  const m = /^Max open files\s+(\S+)/m.exec(text);
  if (m === null || m[1] === 'unlimited') return null;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

/** Descriptors kept for everything but connections: listeners, Redis, files, /proc reads, stdio. */
export const DESCRIPTOR_RESERVE = 32;

/**
 * MAX_CONNECTIONS as applied: the setting when it is set, else 90% of the descriptor limit less
 * DESCRIPTOR_RESERVE (at least 1), so that the process refuses connections before accept(2) and
 * its own reads start failing; 0 (no limit) when the descriptor limit is unknown.
 */
export function effectiveMaxConnections(setting: number, fdLimit: number | null = descriptorLimit()): number {
  if (setting > 0) return setting;
  if (fdLimit === null) return 0;
  return Math.max(1, Math.floor(fdLimit * 0.9) - DESCRIPTOR_RESERVE);
}

/** Admin-port connections admitted beyond MAX_CONNECTIONS, so probes and scrapes still answer under a flood. */
export const ADMIN_RESERVE = 16;

/**
 * gRPC API connections admitted beyond MAX_CONNECTIONS (and beyond the admin reserve): the API
 * port's own cap (MAX_API_CONNECTIONS). Admitted within MAX_CONNECTIONS only, a flood of sockets
 * on the client port shut the API out.
 */
export const API_RESERVE = 16;
