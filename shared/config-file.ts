import { stringify } from 'yaml';
import { describeConfig } from './config.ts';

// The default /etc/navigator/navigator.yaml: every field, commented with its meaning, set to its
// default. Generated from the schema so it can never drift from what the depot accepts.
export function renderDefaultConfig(overrides: Record<string, Record<string, unknown>> = {}): string {
  const lines = [
    '# Navigator depot configuration.',
    '# Every field is shown with its default. Check a file with `navigator config check --config FILE`.',
    '# Any field can be overridden from the environment: NAVIGATOR__section__field=value.',
    '',
  ];
  // Defaults that depend on the machine are left commented so the file is the same everywhere.
  const machineSpecific = new Set(['node.name']);
  let section = '';
  for (const row of describeConfig()) {
    if (row.section !== section) {
      section = row.section;
      lines.push(`${section}:`);
    }
    const override = overrides[row.section]?.[row.field];
    lines.push(`  # ${row.description}`);
    if (override === undefined && machineSpecific.has(`${row.section}.${row.field}`)) {
      lines.push(`  # ${row.field}: (this host's name)`);
      continue;
    }
    const value = override ?? row.default;
    // Values in flow style keep each field on one line under its comment.
    const rendered = stringify(value, { collectionStyle: 'flow', lineWidth: 0 }).trimEnd();
    lines.push(`  ${row.field}: ${rendered}`);
  }
  return `${lines.join('\n')}\n`;
}
