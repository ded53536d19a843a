/** The operator role. The Kubernetes client is loaded here only: other roles never pay for it. */
import type { Config } from '../control';
import type { Logger } from '../telemetry';
import { runUntilSignal } from './lifecycle';

export async function operator(_config: Config, log: Logger): Promise<void> {
  const { Operator, loadOperatorConfig } = await import('../../operator');
  const op = new Operator(loadOperatorConfig(), log);
  await runUntilSignal({ start: () => op.start(), stop: () => op.stop() }, log, 'stepping down');
}
