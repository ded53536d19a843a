/**
 * Every role of `switchboard <role>`, each set up in one module of this folder and sharing one
 * process lifecycle (lifecycle.ts): the CLI only picks one.
 */
import type { Config } from '../control';
import type { Logger } from '../telemetry';
import { broadcast, createBroadcast } from './broadcast';
import { createClusterGateway, gateway, incarnationId } from './gateway';
import { operator } from './operator';
import { createStandalone, standalone } from './standalone';

export type RoleMain = (config: Config, log: Logger) => Promise<void>;

export const roles: Record<string, RoleMain> = { standalone, gateway, broadcast, operator };

export { createBroadcast, createClusterGateway, createStandalone, incarnationId };
