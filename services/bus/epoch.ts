/**
 * Room epochs: a random id chosen whenever a room's sequence starts at 0, so that a seq is only
 * ever compared with seqs of the same epoch (docs/protocol.md, "Positions and recovery").
 * Hex only: the broadcast tier splices epochs into JSON inside Redis, with no escaping.
 */
import { randomBytes } from 'node:crypto';

export function newEpoch(): string {
  return randomBytes(6).toString('hex');
}
