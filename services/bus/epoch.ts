/**
 * Room epochs: a random id chosen whenever a room's sequence starts at 0, so that a seq is only
 * ever compared with seqs of the same epoch (docs/protocol.md, "Positions and recovery").
 * Hex only: the broadcast tier splices epochs into JSON inside Redis, with no escaping.
 *
 * The broadcast tier offers a fresh candidate with every batch (used only by a room that has no
 * epoch yet), so random bytes are drawn in blocks rather than one system call per batch.
 */
import { randomBytes } from 'node:crypto';

const EPOCH_BYTES = 6;
let pool = Buffer.alloc(0);
let offset = 0;

export function newEpoch(): string {
  if (offset + EPOCH_BYTES > pool.length) {
    pool = randomBytes(EPOCH_BYTES * 128);
    offset = 0;
  }
  offset += EPOCH_BYTES;
  return pool.toString('hex', offset - EPOCH_BYTES, offset);
}
