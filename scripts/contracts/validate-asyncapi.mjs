// Validates an AsyncAPI document with the official parser (@asyncapi/parser):
//   node scripts/contracts/validate-asyncapi.mjs <document.json>
// NODE_PATH must reach the parser (scripts/lib.sh's require_contract_tools
// installs it into .local/asyncapi). Prints every diagnostic; exits 1 when
// any is an error, or when the parser could not build a document.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Parser, DiagnosticSeverity } = require('@asyncapi/parser');

const file = process.argv[2];
if (!file) {
  console.error('usage: validate-asyncapi.mjs <document.json>');
  process.exit(2);
}
const { document, diagnostics } = await new Parser().parse(await readFile(file, 'utf8'));
const names = { 0: 'error', 1: 'warning', 2: 'information', 3: 'hint' };
for (const d of diagnostics) {
  console.log(`${names[d.severity] ?? d.severity}: ${d.code}: ${d.message} at /${d.path.join('/')}`);
}
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).length;
if (!document || errors > 0) {
  console.log(`${file}: INVALID (${errors} errors)`);
  process.exit(1);
}
console.log(
  `${file}: valid AsyncAPI ${document.version()}: ${document.channels().length} channels, ` +
    `${document.operations().length} operations, ${document.messages().length} messages, ` +
    `${diagnostics.length} diagnostics`,
);
