/**
 * Command-line parsing is node:util parseArgs everywhere (services/cli.ts, flags-cli.ts,
 * load-tests/cli.ts, test/chaos/cli.ts). This turns its errors into one short line in our words:
 * its own messages run over several lines, and the one for an unknown option explains `--`
 * positionals, which none of our commands take.
 */

/** One line for a parseArgs error (its message unchanged for anything else). */
export function argsErrorMessage(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  // The option as the user would write it: "--rollout" out of "Option '--rollout <value>' ..."
  // and "--help" out of "Option '-h, --help' ...".
  const opt = /--[^\s'<=]+/.exec(msg)?.[0] ?? /'(-[^\s',]+)/.exec(msg)?.[1];
  switch (e?.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      if (opt !== undefined) return `unknown option ${opt}`;
      break;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL': {
      const arg = /'([^']*)'/.exec(msg)?.[1];
      if (arg !== undefined) return `unexpected argument "${arg}"`;
      break;
    }
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (opt === undefined) break;
      if (/argument missing/.test(msg)) return `${opt} needs a value`;
      if (/ambiguous/.test(msg)) return `${opt} needs a value (one that starts with "-" is written ${opt}=-value)`;
      if (/does not take an argument/.test(msg)) return `${opt} takes no value`;
      break;
  }
  return msg.split('\n')[0];
}
